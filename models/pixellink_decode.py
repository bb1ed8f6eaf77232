"""PixelLink targets and decoding (Deng et al., AAAI 2018), vectorised.

Maps live at 1/4 of the input. Link channel ``2k, 2k+1`` = (negative, positive) score of the
link from a pixel to its neighbour ``NEIGHBOURS[k]`` = ``(dy, dx)``.

Decoding: a pixel is positive when its lesion score exceeds ``pixel_threshold``; two
neighbouring positive pixels are joined when either of the two link predictions between them
exceeds ``link_threshold`` (PixelLink's rule); connected components of that graph
(:func:`scipy.sparse.csgraph.connected_components`) become detections. Each component gives the
axis-aligned box of its pixels scaled back to input pixels; components whose box covers less
than ``min_area`` input pixels^2 are dropped; the score is the component's mean pixel score; no
NMS.

Defaults (the paper is silent; the authors' PixelLink code decides): ``pixel_threshold = 0.2``
(their evaluation uses its confidence threshold, the paper's 0.2 of section V-B, as the pixel
threshold), ``link_threshold = 0.8`` and ``min_area = 3`` input pixels^2 (their config).
Their area is that of the component's ``minAreaRect`` after upsampling the label map to the
input size, so at the 1/4 map scale no component is ever that small (one map pixel is already a
4 x 4 block); measured on the box here, the same holds: a one-pixel component at stride 4
(16 px^2) is kept. Kept as in PixelLink, not taken from the code: the box is the bounding
rectangle of the component's map pixels (the code takes the axis-aligned hull of the rotated
``minAreaRect`` in integer pixel indices; both agree for rectangular components, which is what
the rectangle targets train) and the score is the mean over map pixels (the code averages the
bilinearly upsampled score map).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1),
)  # fmt: skip
_FORWARD = (4, 5, 6, 7)  # (0,1), (1,-1), (1,0), (1,1): each undirected pair once
PIXEL_THRESHOLD = 0.2  # = the evaluation's confidence threshold (authors' code)
LINK_THRESHOLD = 0.8
MIN_AREA = 3.0  # input pixels^2 (authors' config)


def _reverse(k: int) -> int:
    dy, dx = NEIGHBOURS[k]
    return NEIGHBOURS.index((-dy, -dx))


def instance_map(boxes: Tensor, height: int, width: int, stride: tuple[float, float]) -> Tensor:
    """Instance ids ``[H, W]`` (0 = background) of boxes ``[N, 4]`` filled as rectangles.

    A map pixel belongs to a box when its centre lies inside it; a box holding no centre gets
    the pixel under its centre. As in PixelLink, pixels covered by several boxes are negative.
    """
    sy, sx = stride
    dev = boxes.device
    if len(boxes) == 0:
        return torch.zeros((height, width), dtype=torch.long, device=dev)
    cy = (torch.arange(height, device=dev, dtype=torch.float32) + 0.5) * sy
    cx = (torch.arange(width, device=dev, dtype=torch.float32) + 0.5) * sx
    b = boxes.to(torch.float32)
    in_y = (cy[None] > b[:, 1:2]) & (cy[None] < b[:, 3:4])  # [N, H]
    in_x = (cx[None] > b[:, 0:1]) & (cx[None] < b[:, 2:3])  # [N, W]
    inside = in_y[:, :, None] & in_x[:, None, :]  # [N, H, W]
    empty = ~inside.flatten(1).any(1)
    if empty.any():
        centre = (b[:, :2] + b[:, 2:]) / 2
        iy = (centre[:, 1] / sy).long().clamp(0, height - 1)
        ix = (centre[:, 0] / sx).long().clamp(0, width - 1)
        idx = torch.nonzero(empty).flatten()
        inside[idx, iy[idx], ix[idx]] = True
    count = inside.sum(0)
    ids = inside.float().argmax(0) + 1
    return torch.where(count == 1, ids, torch.zeros_like(ids))


def link_targets(instances: Tensor) -> Tensor:
    """Positive-link targets ``[8, H, W]`` (bool): pixel and neighbour in the same instance."""
    h, w = instances.shape
    padded = F.pad(instances, (1, 1, 1, 1))
    shifted = torch.stack(
        [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in NEIGHBOURS]
    )
    return (instances[None] > 0) & (shifted == instances[None])


def decode(
    pixel_scores: np.ndarray,
    link_scores: np.ndarray,
    stride: tuple[float, float],
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[K, 4]`` (input pixels, x0 y0 x1 y1) and scores ``[K]``, by descending score.

    ``pixel_scores [H, W]`` and ``link_scores [8, H, W]`` are positive-class probabilities;
    ``stride`` = (input pixels per map row, per map column); ``min_area`` in input pixels^2.
    """
    h, w = pixel_scores.shape
    if link_scores.shape != (len(NEIGHBOURS), h, w):
        raise ValueError(f"link scores of shape {link_scores.shape} do not fit pixels {(h, w)}")
    pos = pixel_scores > pixel_threshold
    n = int(pos.sum())
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    node = np.full((h, w), -1, dtype=np.int64)
    node[pos] = np.arange(n)
    links = link_scores > link_threshold
    rows, cols = [], []
    for k in _FORWARD:
        dy, dx = NEIGHBOURS[k]
        src = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
        dst = (slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx)))
        joined = pos[src] & pos[dst] & (links[k][src] | links[_reverse(k)][dst])
        rows.append(node[src][joined])
        cols.append(node[dst][joined])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    labels = np.zeros((h, w), dtype=np.int64)
    labels[pos] = comp + 1
    area = np.bincount(comp, minlength=n_comp)
    score = np.bincount(comp, weights=pixel_scores[pos], minlength=n_comp) / area
    slices = ndimage.find_objects(labels)
    sy, sx = stride
    boxes = np.array(
        [[s[1].start * sx, s[0].start * sy, s[1].stop * sx, s[0].stop * sy] for s in slices],
        dtype=np.float32,
    )
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = box_area >= min_area
    boxes, score = boxes[keep], score[keep].astype(np.float32)
    order = np.argsort(-score, kind="stable")
    return boxes[order], score[order]
