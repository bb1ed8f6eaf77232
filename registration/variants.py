"""Names of the registered variants: method, dimensions and parameter-map preset in one name.

A variant is one way of registering a cohort, and its folder name says which:
``<method>[-3d][-<preset>]``.

- ``rigid``, ``affine``, ``nonrigid``: the paper's variants, 2D per slice with elastix's
  default maps.
- ``nonrigid-fast`` (and ``rigid-fast``, ``affine-fast``): 2D per slice with the ``fast``
  maps (:mod:`registration.presets`).
- ``rigid-3d``, ``affine-3d``, ``nonrigid-3d``: each moving phase registered to portal as one
  3D volume.

Every name is a different experiment: different images reach the detector. The runner keeps
each in its own run folders, and the analysis compares only the paper's variants with the
paper (:data:`PAPER_VARIANTS`). The names are defined in :mod:`benchmark.vocabulary`; this
module parses and validates them.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.vocabulary import DEFAULT_PRESET, DIMS, PRESETS, preset_defined, variant_name
from benchmark.vocabulary import REGISTERED_VARIANTS as ALL_VARIANTS
from benchmark.vocabulary import REGISTRATIONS as METHODS
from benchmark.vocabulary import REGISTRATIONS as PAPER_VARIANTS

__all__ = [
    "ALL_VARIANTS",
    "DEFAULT_PRESET",
    "DIMS",
    "METHODS",
    "PAPER_VARIANTS",
    "PRESETS",
    "Variant",
    "family",
    "parse_variant",
]


@dataclass(frozen=True)
class Variant:
    """How a variant is registered: elastix method, 2D per slice or 3D, map preset."""

    method: str
    dims: int = 2
    preset: str = DEFAULT_PRESET

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown registration method {self.method!r}; use one of "
                             f"{', '.join(METHODS)}")
        if self.dims not in DIMS:
            raise ValueError(f"--dims must be 2 or 3, got {self.dims}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        if not preset_defined(self.dims, self.preset):
            raise ValueError(f"the {self.preset!r} preset is defined for 2D registration only "
                             "(--dims 2)")

    @property
    def name(self) -> str:
        """The variant's folder name, ``<method>[-3d][-<preset>]``."""
        return variant_name(self.method, self.dims, self.preset)

    @property
    def is_paper(self) -> bool:
        """The paper's protocol: 2D per slice with elastix's default maps."""
        return self.dims == 2 and self.preset == DEFAULT_PRESET

    def with_method(self, method: str) -> Variant:
        """The same dimensions and preset with another method (e.g. the affine to reuse)."""
        return Variant(method, self.dims, self.preset)


def family(dims: int = 2, preset: str = DEFAULT_PRESET) -> tuple[Variant, ...]:
    """Rigid, affine and non-rigid with the same dimensions and preset."""
    return tuple(Variant(method, dims, preset) for method in METHODS)


def parse_variant(name: str) -> Variant:
    """The :class:`Variant` a folder name stands for; ValueError naming the valid ones."""
    for dims in DIMS:
        for preset in PRESETS:
            if preset_defined(dims, preset):
                for variant in family(dims, preset):
                    if variant.name == name:
                        return variant
    raise ValueError(f"unknown variant {name!r}; use one of {', '.join(ALL_VARIANTS)}")
