"""SSD box encoding/decoding against priors with variances (0.1, 0.2).

Boxes in "point form" are ``(x0, y0, x1, y1)``; priors are ``(cx, cy, w, h)``; both relative
to the input size. ``encode`` gives the regression targets of the loc head, ``decode`` inverts it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

VARIANCES = (0.1, 0.2)
MAX_LOG_SCALE = math.log(1000.0 / 16)  # as torchvision: an untrained head must not give inf


def point_form(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x0, y0, x1, y1)``."""
    return torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)


def encode(matched: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Point-form boxes ``[P, 4]`` matched to each prior -> offsets ``[P, 4]``."""
    centre = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (
        variances[0] * priors[:, 2:]
    )
    wh = (matched[:, 2:] - matched[:, :2]).clamp(min=1e-6)  # a degenerate box must not give -inf
    size = torch.log(wh / priors[:, 2:]) / variances[1]
    return torch.cat([centre, size], 1)


def decode(loc: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Offsets ``[..., P, 4]`` -> point-form boxes ``[..., P, 4]``."""
    centre = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp((loc[..., 2:] * variances[1]).clamp(max=MAX_LOG_SCALE))
    return torch.cat([centre - size / 2, centre + size / 2], -1)
