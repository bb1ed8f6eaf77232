"""Anchor optimisation by differential evolution (Zlocha et al., MICCAI 2019).

The Improved RetinaNet replaces RetinaNet's default anchors (3 scales ``2**(k/3)`` x 3 ratios
``0.5, 1, 2``) by 3 scales x 5 ratios chosen to fit the training boxes: the mean, over the
training boxes, of the best IoU any anchor reaches is maximised with
:func:`scipy.optimize.differential_evolution`.

Conventions (the ones of :class:`torchvision.models.detection.anchor_utils.AnchorGenerator`):
an anchor of level ``l``, scale ``s`` and ratio ``r`` has area ``(base_sizes[l] * s) ** 2`` and
``height / width == r``. Ratios are kept symmetric (``1`` and pairs ``r, 1/r``), as in Zlocha
et al.'s anchor optimiser, so an odd count includes ratio 1.

Simplification (documented): the IoU of a box and an anchor is computed with both centred on the
same point (shape-only IoU). The anchor grid's stride offsets are ignored; they shift every
candidate the same way and would only add noise to the search.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import differential_evolution

#: RetinaNet's default anchors (torchvision ``_default_anchorgen``), 3 scales x 3 ratios.
DEFAULT_SCALES: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
DEFAULT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
#: Base anchor size per pyramid level (4 x stride for strides 4, 8, 16, 32, 64): the levels of
#: ``models.retinanet``.
DEFAULT_BASE_SIZES: tuple[float, ...] = (16.0, 32.0, 64.0, 128.0, 256.0)

_LOG2_SCALE_BOUNDS = (-1.5, 1.5)
_LOG_RATIO_BOUNDS = (0.0, float(np.log(4.0)))


def _box_wh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"boxes must be an [N, 4] array of x0, y0, x1, y1; got shape {boxes.shape}"
        )
    wh = boxes[:, 2:] - boxes[:, :2]
    if len(wh) == 0:
        raise ValueError("no boxes to fit anchors to")
    if np.any(wh <= 0) or not np.all(np.isfinite(wh)):
        raise ValueError("boxes must have finite, positive width and height (x1 > x0, y1 > y0)")
    return wh


def anchor_shapes(
    scales: Sequence[float], ratios: Sequence[float], base_sizes: Sequence[float]
) -> np.ndarray:
    """Widths and heights ``[L * S * R, 2]`` of every anchor shape (torchvision convention)."""
    base = np.asarray(base_sizes, dtype=np.float64)[:, None, None]
    size = base * np.asarray(scales, dtype=np.float64)[None, :, None]
    h_ratio = np.sqrt(np.asarray(ratios, dtype=np.float64))[None, None, :]
    w = size / h_ratio
    h = size * h_ratio
    return np.stack([w.ravel(), h.ravel()], axis=1)


def best_anchor_iou(
    boxes: np.ndarray,
    scales: Sequence[float],
    ratios: Sequence[float],
    base_sizes: Sequence[float] = DEFAULT_BASE_SIZES,
) -> np.ndarray:
    """Per box, the best centred IoU with any anchor shape, ``[N]``."""
    return _best_iou_wh(_box_wh(boxes), anchor_shapes(scales, ratios, base_sizes))


def _best_iou_wh(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(
        wh[:, None, 1], anchors[None, :, 1]
    )
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return (inter / union).max(axis=1)


def mean_best_anchor_iou(
    boxes: np.ndarray,
    scales: Sequence[float],
    ratios: Sequence[float],
    base_sizes: Sequence[float] = DEFAULT_BASE_SIZES,
) -> float:
    """Mean over boxes of the best anchor IoU: the quantity the optimiser maximises."""
    return float(best_anchor_iou(boxes, scales, ratios, base_sizes).mean())


def _symmetric_ratios(log_ratios: np.ndarray, num_ratios: int) -> tuple[float, ...]:
    values = [1.0] if num_ratios % 2 else []
    for lr in log_ratios:
        values += [float(np.exp(-lr)), float(np.exp(lr))]
    return tuple(sorted(values))


def optimise_anchors(
    boxes: np.ndarray,
    seed: int,
    *,
    num_scales: int = 3,
    num_ratios: int = 5,
    base_sizes: Sequence[float] = DEFAULT_BASE_SIZES,
    maxiter: int = 200,
    popsize: int = 15,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Fit anchor ``(scales, ratios)`` to training boxes ``[N, 4]`` (input pixels, x0 y0 x1 y1).

    Maximises the mean best-anchor IoU by seeded differential evolution over log2-scales in
    ``[-1.5, 1.5]`` and log-ratios in ``[0, log 4]`` (symmetric ratio pairs), over the unique
    box shapes weighted by their counts (the same mean, faster: boxes from masks repeat shapes).
    The result is deterministic for a given ``seed``; scales and ratios come back sorted.
    """
    if num_scales < 1 or num_ratios < 1:
        raise ValueError("num_scales and num_ratios must be >= 1")
    # boxes from masks repeat a few shapes: optimise over unique shapes, weighted by count
    wh, counts = np.unique(_box_wh(boxes), axis=0, return_counts=True)
    freq = counts / counts.sum()
    n_pairs = num_ratios // 2

    def decode(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        scales = tuple(sorted(float(v) for v in 2.0 ** x[:num_scales]))
        return scales, _symmetric_ratios(x[num_scales:], num_ratios)

    def loss(x: np.ndarray) -> float:
        scales, ratios = decode(x)
        return -float(_best_iou_wh(wh, anchor_shapes(scales, ratios, base_sizes)) @ freq)

    bounds = [_LOG2_SCALE_BOUNDS] * num_scales + [_LOG_RATIO_BOUNDS] * n_pairs
    result = differential_evolution(
        loss, bounds, seed=seed, maxiter=maxiter, popsize=popsize, tol=1e-4, polish=True
    )
    return decode(result.x)
