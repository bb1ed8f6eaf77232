"""The names every stage shares: phases, variants and metrics, defined once.

Part of the small core of :mod:`benchmark` (with :mod:`benchmark.cohort`,
:mod:`benchmark.atomic` and :mod:`benchmark.names`) that :mod:`registration` may import.
This module imports nothing, so any layer can use it.
"""

from __future__ import annotations

PHASES: tuple[str, ...] = ("precontrast", "arterial", "portal", "delayed")
"""Phase order used everywhere: files, manifests and the 12-channel input (phase-major)."""

FIXED_PHASE = "portal"
"""The registration target and the phase whose grid all others are resampled onto."""

MOVING_PHASES: tuple[str, ...] = tuple(p for p in PHASES if p != FIXED_PHASE)
"""The phases registration moves onto :data:`FIXED_PHASE`."""

UNREGISTERED = "unregistered"
"""The variant of a cohort as imported or generated (no registration)."""

REGISTRATIONS: tuple[str, ...] = ("rigid", "affine", "nonrigid")
"""The registration methods; with 2D per-slice registration and elastix's default maps they
give the paper's three registered variants (folders named after the method)."""

DIMS: tuple[int, ...] = (2, 3)
"""Registration dimensions: 2D per slice (the paper) or each phase as one 3D volume."""

PRESETS: tuple[str, ...] = ("default", "fast")
"""elastix parameter-map presets (:mod:`registration.presets`)."""

DEFAULT_PRESET = "default"
"""elastix's default maps (the paper); the only preset defined for 3D registration."""


def variant_name(method: str, dims: int = 2, preset: str = DEFAULT_PRESET) -> str:
    """The folder name of a registered variant, ``<method>[-3d][-<preset>]``."""
    suffix = "-3d" if dims == 3 else ""
    if preset != DEFAULT_PRESET:
        suffix += f"-{preset}"
    return method + suffix


def preset_defined(dims: int, preset: str) -> bool:
    """Whether ``preset`` exists for ``dims``-dimensional registration (``fast`` is 2D only)."""
    return dims == 2 or preset == DEFAULT_PRESET


REGISTERED_VARIANTS: tuple[str, ...] = tuple(
    variant_name(method, dims, preset)
    for dims in DIMS
    for preset in PRESETS
    if preset_defined(dims, preset)
    for method in REGISTRATIONS
)
"""Every registered variant name, the paper's three first; the others (``nonrigid-fast``,
``rigid-3d``, ...) are separate experiments, never compared with the paper."""

VARIANTS: tuple[str, ...] = (UNREGISTERED, *REGISTRATIONS)
"""The paper's variants of a cohort: the ones compared with the published numbers."""

RUN_VARIANTS: tuple[str, ...] = (UNREGISTERED, *REGISTERED_VARIANTS)
"""Every variant a model can be trained and tested on (the paper's first)."""

VARIANT_LABELS: dict[str, str] = {
    "unregistered": "Unregistered",
    "rigid": "Rigid",
    "affine": "Affine",
    "nonrigid": "Non-rigid",
}
"""How tables and figures print each variant."""

THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
"""Overlap thresholds of a true positive."""

CRITERIA: tuple[str, ...] = ("IoU", "IoBB")
"""Overlap criteria: intersection over union, intersection over the ground-truth box."""

METRIC_KEYS: tuple[str, ...] = tuple(f"{c}{round(t * 100)}" for c in CRITERIA for t in THRESHOLDS)
"""The AP metrics of every run: ``IoU30`` ... ``IoBB70``."""

PAPER_CELLS: tuple[tuple[str, str], ...] = (
    ("val", "IoU30"),
    ("val", "IoU50"),
    ("val", "IoU70"),
    ("val", "IoBB30"),
    ("val", "IoBB50"),
    ("val", "IoBB70"),
    ("test", "IoU50"),
    ("test", "IoBB50"),
)
"""The eight AP metrics averaged into one sensitivity in the paper's Fig. 5, as (split, metric)."""

AVERAGE: tuple[str, str] = ("all", "average")
"""The (split, metric) cell of the average over :data:`PAPER_CELLS`."""
