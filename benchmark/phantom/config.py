"""Settings of the synthetic phantom cohort."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmark import PHASES

FOV_MM = 380.0
"""In-plane field of view; the pixel spacing is ``FOV_MM / size``."""

SLICE_MM = 5.0
"""Slice thickness and spacing, as in the paper's portal-venous series."""

DEFAULT_MOTION_MM = 4.0
"""Default cranio-caudal breath-hold mismatch scale (mm).

Calibrated so that the arterial-vs-portal liver Dice (per slice, mean over non-zero slices)
of a default 40-slice cohort lands near the paper's unregistered 0.900 (Table II), seed 0:
0.900 over 12 patients at 96 pixels (0.904 over all three moving phases), 0.889 (0.901) over 6
at 160 pixels, 0.897 (0.917) over 2 at 512 pixels. Thin slabs through mid-liver give higher
Dice (about 0.97 over 5-6 slices): cross-sections change little there.
"""


DEFAULT_BULK_MM = 3.0
"""Default size of the bulk in-plane table shift of each non-portal phase (mm): the translation
is drawn between 0.5x and 1.5x of it, the rotation with SD 0.3 degree per mm (0.9 degree)."""


PAPER_SPLITS = (216, 54, 10)
"""The paper's train / val / test patients (of 280)."""


def check_splits(splits: tuple[int, int, int] | list[int]) -> tuple[int, int, int]:
    """Train/val/test proportions as a tuple of three non-negative integers, train and test > 0."""
    values = tuple(splits)
    if (
        len(values) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)
        or values[0] == 0
        or values[2] == 0
    ):
        raise ValueError(
            f"splits must be three whole numbers train,val,test (train and test > 0), e.g. "
            f"216,54,10; got {list(values)}"
        )
    return values  # type: ignore[return-value]


def cohort_name(phantom: dict[str, Any]) -> str:
    """Name of a profile's synthetic cohort from its ``phantom`` section (motion left out),
    e.g. ``synthetic-8p-256px-6z-seed2``; a split other than the paper's is appended."""
    name = (
        f"synthetic-{phantom['patients']}p-{phantom['size']}px-{phantom['slices']}z-"
        f"seed{phantom['seed']}"
    )
    splits = check_splits(phantom.get("splits") or PAPER_SPLITS)
    if splits != PAPER_SPLITS:
        name += "-split" + "-".join(str(v) for v in splits)
    return name


@dataclass(frozen=True)
class PhantomConfig:
    """Geometry, motion and noise of generated patients.

    ``motion_mm`` scales the breathing misalignment of each non-portal phase (the SI part of a
    patient's mismatch is drawn between 0.5x and 1.5x of it). ``bulk_mm`` scales the rigid
    in-plane shift of the whole body between series (wall, spine and ribs included); both 0
    give perfectly aligned phases.
    ``noise_hu`` is the range the per-patient noise SD is drawn from. ``z_subsamples`` label
    samples per slice are averaged to give the partial-volume effect of 5 mm slices.
    ``lesion_phase``: the phase whose lesion mask is stored. ``None`` (default) draws it per
    patient with the paper's annotator frequencies, so the mask moves with that phase's motion;
    ``"portal"`` keeps every label in the fixed frame whatever the motion (the robustness
    ladder, :mod:`benchmark.robustness`). Neither choice changes any other draw.
    """

    size: int = 512
    slices: int = 40
    motion_mm: float = DEFAULT_MOTION_MM
    bulk_mm: float = DEFAULT_BULK_MM
    noise_hu: tuple[float, float] = (10.0, 15.0)
    z_subsamples: int = 3
    lesion_phase: str | None = None

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 2048:
            raise ValueError(f"size must be between 32 and 2048 pixels, got {self.size}")
        if not 3 <= self.slices <= 400:
            raise ValueError(f"slices must be between 3 and 400, got {self.slices}")
        if not 0.0 <= self.motion_mm <= 50.0:
            raise ValueError(f"motion_mm must be between 0 and 50 mm, got {self.motion_mm}")
        if not 0.0 <= self.bulk_mm <= 20.0:
            raise ValueError(f"bulk_mm must be between 0 and 20 mm, got {self.bulk_mm}")
        low, high = self.noise_hu
        if not 0.0 <= low <= high <= 100.0:
            raise ValueError(
                f"noise_hu must be an increasing pair within [0, 100], got {self.noise_hu}"
            )
        if self.z_subsamples not in (1, 3, 5, 7, 9):
            raise ValueError(f"z_subsamples must be odd, 1 to 9, got {self.z_subsamples}")
        if self.lesion_phase is not None and self.lesion_phase not in PHASES:
            raise ValueError(
                f"lesion_phase must be one of {', '.join(PHASES)} or None, got {self.lesion_phase!r}"
            )

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing ``(z, y, x)`` in mm."""
        pixel = FOV_MM / self.size
        return (SLICE_MM, pixel, pixel)

    def params(self) -> dict[str, Any]:
        """JSON-ready parameters (stored in the cohort manifest)."""
        data = asdict(self)
        data["noise_hu"] = list(self.noise_hu)
        if self.lesion_phase is None:  # cohorts made before the field existed still resume
            del data["lesion_phase"]
        return data
