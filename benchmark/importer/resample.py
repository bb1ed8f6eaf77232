"""Volumes with a physical (LPS) affine, reorientation to the cohort grid, resampling.

A :class:`Volume` keeps its array in the order it was stored and a 4x4 ``affine`` that maps
array indices ``(a0, a1, a2, 1)`` to DICOM patient coordinates (LPS, mm). Everything is
resampled by physical position, never by array index, so a mask stored in LAS, RAS or
slice-reversed order lands on the right voxels.

The cohort grid is axis-aligned LPS ``[z, y, x]``. The portal phase defines it: an
axis-aligned portal volume is only transposed/flipped onto it (no interpolation); an oblique
portal volume is rejected (resampling it would blur the reference phase every other phase
is compared with, so we leave that choice to the user).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

#: largest deviation of a direction cosine from a coordinate axis still called axis-aligned
AXIS_TOLERANCE = 1e-3
#: cohort grid axis order: array axis 0 -> world z, 1 -> y, 2 -> x, all increasing (LPS)
_LPS_ZYX = np.array([[2, 1], [1, 1], [0, 1]], dtype=float)


@dataclass
class Volume:
    """An array plus the affine from its indices to LPS millimetres, and where it came from."""

    array: np.ndarray
    affine: np.ndarray
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along each array axis (mm)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def grid_affine(
    spacing: tuple[float, float, float], origin: tuple[float, float, float]
) -> np.ndarray:
    """Affine of a cohort ``[z, y, x]`` grid with ``spacing``/``origin`` given as ``(z, y, x)``."""
    sz, sy, sx = spacing
    oz, oy, ox = origin
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2] = sz, sy, sx
    affine[:3, 3] = (ox, oy, oz)
    affine[3, 3] = 1.0
    return affine


def is_axis_aligned(affine: np.ndarray) -> bool:
    """True when every array axis runs along one LPS axis (allowing flips and transposes)."""
    cosines = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return bool(np.all(np.abs(cosines).max(axis=0) >= 1.0 - AXIS_TOLERANCE))


def to_lps_grid(
    volume: Volume,
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """Transpose/flip an axis-aligned volume onto the cohort ``[z, y, x]`` LPS grid.

    Returns ``(array, spacing, origin)`` with spacing and origin as ``(z, y, x)`` mm. Raises
    ``ValueError`` naming the source when the volume is oblique.
    """
    if not is_axis_aligned(volume.affine):
        cosines = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
        raise ValueError(
            f"{volume.source}: oblique orientation (direction cosines "
            f"{np.round(cosines.T, 4).tolist()}); the portal phase defines the cohort grid and "
            "must be axis-aligned: reformat it to axial slices first"
        )
    current = nib.orientations.io_orientation(volume.affine)
    transform = nib.orientations.ornt_transform(current, _LPS_ZYX)
    array = nib.orientations.apply_orientation(volume.array, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.array.shape)
    spacing = (float(affine[2, 0]), float(affine[1, 1]), float(affine[0, 2]))
    origin = (float(affine[2, 3]), float(affine[1, 3]), float(affine[0, 3]))
    return np.ascontiguousarray(array), spacing, origin


def resample(
    volume: Volume,
    shape: tuple[int, int, int],
    target_affine: np.ndarray,
    *,
    order: int,
    cval: float,
) -> np.ndarray:
    """Sample ``volume`` at the voxel centres of the target grid (physical coordinates).

    ``order`` 1 (trilinear) for HU, 0 (nearest neighbour) for masks; points outside the
    source field of view get ``cval``. When the target voxels fall exactly on source voxels
    (same grid, or one stored flipped/transposed) the values are copied, not interpolated.
    """
    index_map = np.linalg.solve(volume.affine, target_affine)  # target index -> source index
    snapped = np.rint(index_map)
    near = np.abs(index_map - snapped) < 1e-4  # float noise must not move nearest neighbours
    index_map[near] = snapped[near]
    matrix, offset = index_map[:3, :3], index_map[:3, 3]
    data = volume.array.astype(np.float32) if order else volume.array
    exact = _reindex(data, matrix, offset, shape, cval)
    if exact is not None:
        return exact
    # A target voxel is inside the source when it falls in a source voxel, i.e. its index lies
    # in [-0.5, n - 0.5) ('grid-constant' nearest neighbour); inside, edge voxels are
    # extended rather than blended with cval.
    inside = ndimage.affine_transform(
        np.ones(volume.array.shape, np.uint8),
        matrix,
        offset=offset,
        output_shape=tuple(shape),
        order=0,
        mode="grid-constant",
        cval=0,
    ).astype(bool)
    out = ndimage.affine_transform(
        data,
        matrix,
        offset=offset,
        output_shape=tuple(shape),
        order=order,
        mode="nearest",
    )
    out[~inside] = cval
    return out


def _reindex(
    array: np.ndarray,
    matrix: np.ndarray,
    offset: np.ndarray,
    shape: tuple[int, int, int],
    cval: float,
) -> np.ndarray | None:
    """Exact resampling by indexing when the map is a signed axis permutation with integer
    offsets (every target voxel centre is a source voxel centre); ``None`` otherwise."""
    if not (np.all(np.isin(matrix, (-1.0, 0.0, 1.0))) and np.all(offset == np.rint(offset))):
        return None
    if not np.all(np.abs(matrix).sum(axis=0) == 1) or not np.all(np.abs(matrix).sum(axis=1) == 1):
        return None
    target_axis = [int(np.argmax(np.abs(matrix[s]))) for s in range(3)]
    index, valid = [], []
    for s, t in enumerate(target_axis):
        i = matrix[s, t] * np.arange(shape[t]) + offset[s]
        valid.append((i >= 0) & (i < array.shape[s]))
        index.append(np.clip(i, 0, array.shape[s] - 1).astype(np.intp))
    order = [target_axis.index(t) for t in range(3)]
    out = array[np.ix_(*index)].transpose(order).copy()
    v = [valid[s] for s in order]
    out[~(v[0][:, None, None] & v[1][None, :, None] & v[2][None, None, :])] = cval
    return out


def labelled_outside(
    mask: Volume, shape: tuple[int, int, int], target_affine: np.ndarray
) -> tuple[int, int]:
    """``(outside, total)``: labelled mask voxels whose centres fall outside the target grid."""
    idx = np.argwhere(mask.array > 0)
    if not len(idx):
        return 0, 0
    to_target = np.linalg.solve(target_affine, mask.affine)
    pos = idx @ to_target[:3, :3].T + to_target[:3, 3]
    inside = np.all((pos > -0.5) & (pos < np.asarray(shape) - 0.5), axis=1)
    return int((~inside).sum()), len(idx)


def coverage(
    volume: Volume, shape: tuple[int, int, int], target_affine: np.ndarray, step: int = 4
) -> float:
    """Fraction of target voxels (sampled every ``step`` voxels) inside the volume's field of view."""
    axes = [np.arange(0, n, step) for n in shape]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    to_source = np.linalg.solve(volume.affine, target_affine)
    pos = grid @ to_source[:3, :3].T + to_source[:3, 3]
    inside = np.all((pos > -0.5) & (pos < np.asarray(volume.array.shape) - 0.5), axis=1)
    return float(inside.mean())
