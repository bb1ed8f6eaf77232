"""The elastix parameter maps of every variant: elastix's default maps plus stated overrides.

Each map is one of elastix's default maps (``GetDefaultParameterMap``: ``rigid``, ``affine``,
``bspline``) with the overrides listed here; ``nonrigid`` runs two maps in sequence, affine
then B-spline, as the authors' code does. The backends add one more setting to every map,
``DefaultPixelValue`` = the moving image's minimum (air instead of 0 HU outside it), which
only affects resampling.

- ``default`` (the paper's, 2D and 3D): elastix's maps unchanged. The paper says "default
  parameters"; for 3D the same maps apply to the volume (elastix's defaults are written for
  any dimension). The B-spline grid is written out (:data:`PINNED`, the values of
  itk-elastix's default map): SimpleITK-SimpleElastix 3.0's default map has an 8 mm grid
  instead, and both backends must run the same maps.
- ``fast`` (2D only): the same maps with fewer resolutions, iterations and samples and no
  bending-energy penalty (:data:`FAST_OVERRIDES`), chosen so that non-rigid costs at most a
  third of the default maps while liver Dice stays within 0.005 (docs/registration.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from registration.variants import Variant

Overrides = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class ElastixMap:
    """One elastix parameter map: the default map ``base`` with ``overrides`` applied."""

    base: str
    overrides: Overrides = field(default_factory=lambda: MappingProxyType({}))

    def describe(self) -> dict[str, object]:
        """JSON-ready: what a variant's metadata records."""
        return {"base": self.base, "overrides": {k: list(v) for k, v in self.overrides.items()}}


BASE_MAPS: dict[str, tuple[str, ...]] = {
    "rigid": ("rigid",),
    "affine": ("affine",),
    "nonrigid": ("affine", "bspline"),
}
"""elastix default maps run in sequence for each method."""

PINNED: dict[str, Overrides] = {
    "bspline": MappingProxyType({
        "FinalGridSpacingInPhysicalUnits": ("10.000000",),
        "GridSpacingSchedule": ("2.8284271247461903", "2", "1.4142135623730951", "1"),
    }),
}
"""Settings of every preset whose default differs between the elastix bindings (the values of
itk-elastix's default map)."""

_FEWER = {
    "NumberOfResolutions": ("3",),
    "MaximumNumberOfIterations": ("128",),
    "NumberOfSpatialSamples": ("1024",),
}
FAST_OVERRIDES: dict[str, Overrides] = {
    "rigid": MappingProxyType(_FEWER),
    "affine": MappingProxyType(_FEWER),
    "bspline": MappingProxyType({
        "NumberOfResolutions": ("3",),
        "MaximumNumberOfIterations": ("128",),
        # the default schedule has one entry per resolution: keep its last three
        "GridSpacingSchedule": ("2", "1.4142135623730951", "1"),
        # mutual information alone: no TransformBendingEnergyPenalty (2/3 of the B-spline time)
        "Metric": ("AdvancedMattesMutualInformation",),
    }),
}
"""Overrides of the ``fast`` preset per elastix default map (docs/registration.md lists them).

Chosen on the default phantom (512 px): 3 resolutions of 128 iterations instead of 4 x 256,
1024 random samples instead of 2048 for rigid and affine, and no bending-energy penalty, which
cost 2/3 of the B-spline time and changed liver Dice by less than 0.001 there. The B-spline
keeps 2048 samples: with 1024 its liver Dice held but body NCC fell from 0.97 to 0.87 (a
noisier deformation)."""


def parameter_maps(variant: Variant) -> tuple[ElastixMap, ...]:
    """The maps a variant runs, in order (two for ``nonrigid``: affine, then B-spline)."""
    preset = FAST_OVERRIDES if variant.preset == "fast" else {}
    return tuple(
        ElastixMap(base, MappingProxyType({**PINNED.get(base, {}), **preset.get(base, {})}))
        for base in BASE_MAPS[variant.method]
    )


def describe(variant: Variant) -> list[dict[str, object]]:
    """The maps of a variant as JSON-ready records (stored in the variant's manifest)."""
    return [pmap.describe() for pmap in parameter_maps(variant)]
