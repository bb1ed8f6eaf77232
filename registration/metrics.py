"""Alignment quality between phases: liver Dice as in the paper's Table II, body NCC."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.cohort import Patient
from benchmark.vocabulary import FIXED_PHASE
from benchmark.vocabulary import MOVING_PHASES as MOVING_PHASES

BODY_HU = -500.0
"""Voxels above this HU (in the fixed portal image) count as body for the NCC measure."""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two binary masks; 0 when both are empty."""
    a, b = a > 0, b > 0
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 0.0


def slice_dice(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Dice per axial slice of two ``[z, y, x]`` masks (0 where both slices are empty)."""
    a = moving.reshape(moving.shape[0], -1) > 0
    b = fixed.reshape(fixed.shape[0], -1) > 0
    inter = np.logical_and(a, b).sum(axis=1)
    total = a.sum(axis=1) + b.sum(axis=1)
    return np.divide(2.0 * inter, total, out=np.zeros(len(total)), where=total > 0)


def body_ncc(fixed: np.ndarray, moving: np.ndarray) -> float:
    """Normalised cross-correlation of two images (slices or volumes) inside the fixed image's
    body (HU > -500)."""
    body = fixed > BODY_HU
    if body.sum() < 2:
        return float("nan")
    a = fixed[body].astype(np.float64)
    b = moving[body].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def mean_nonzero(values: np.ndarray) -> float:
    """Mean over non-zero values, as the paper averaged its Dice scores (NaN if none)."""
    values = np.asarray(values, dtype=float)
    nonzero = values[values > 0]
    return float(nonzero.mean()) if nonzero.size else float("nan")


def liver_dice(patient: Patient, slices: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-slice liver Dice of each moving phase against portal (needs per-phase liver masks).

    ``slices`` restricts the computation to those axial indices.
    """
    if not patient.liver or FIXED_PHASE not in patient.liver:
        raise ValueError(f"patient {patient.id}: no per-phase liver masks")
    fixed = patient.liver[FIXED_PHASE]
    idx = np.arange(fixed.shape[0]) if slices is None else np.asarray(slices)
    return {
        phase: slice_dice(patient.liver[phase][idx], fixed[idx])
        for phase in MOVING_PHASES
        if phase in patient.liver
    }


def touched_slices(lesion: np.ndarray) -> np.ndarray:
    """Axial indices the detector dataset can read: lesion slices and their neighbours."""
    lesion_z = np.flatnonzero(lesion.reshape(lesion.shape[0], -1).any(axis=1))
    near = np.concatenate([lesion_z - 1, lesion_z, lesion_z + 1])
    return np.unique(near[(near >= 0) & (near < lesion.shape[0])])


def residual_displacement(
    true: np.ndarray, transform: np.ndarray, spacing: tuple[float, float]
) -> np.ndarray:
    """True displacement left after registration, for one slice.

    ``true`` is the slice's known field ``(Y, X, 3)`` (dz, dy, dx) mm; ``transform`` the
    registration's ``T(x) - x`` as ``(Y, X, 2)`` (dy, dx) mm. The registered slice shows at
    ``x`` the moving anatomy at ``T(x)``, which lies at ``T(x) + d(T(x))`` in portal, so the
    residual is ``u(x) + d(x + u(x))``.
    """
    sy, sx = spacing
    yy, xx = np.mgrid[: true.shape[0], : true.shape[1]].astype(np.float64)
    coords = [yy + transform[..., 0] / sy, xx + transform[..., 1] / sx]
    sampled = np.stack(
        [ndimage.map_coordinates(true[..., c], coords, order=1, mode="nearest") for c in range(3)],
        axis=-1,
    )
    sampled[..., 1] += transform[..., 0]
    sampled[..., 2] += transform[..., 1]
    return sampled.astype(np.float32)
