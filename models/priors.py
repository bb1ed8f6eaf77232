"""SSD prior (default) boxes, derived from the feature-map sizes of the network.

Standard SSD300 configuration (Liu et al.; the authors' GSSD code): six source maps with
min sizes 30,60,111,162,213,264 and max sizes 60,111,162,213,264,315 pixels, aspect ratios
[2],[2,3],[2,3],[2,3],[2],[2] (each ratio r adds r and 1/r), plus a square of size
sqrt(min*max): k = 4,6,6,6,4,4 priors per cell, 8732 in total at 38,19,10,5,3,1.

At ``input_size == 300`` with the standard maps the standard steps 8,16,32,64,100,300 place the
centres, so the priors are exactly SSD300's. For any other input size the sizes scale with
``input_size / 300`` and a map of side ``f`` tiles the image with step ``input_size / f``.
Priors are ``(cx, cy, w, h)`` in [0, 1] relative to the input, clipped to [0, 1].
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

SSD300_FEATURE_SIZES = (38, 19, 10, 5, 3, 1)
SSD300_STEPS = (8, 16, 32, 64, 100, 300)
SSD300_MIN_SIZES = (30, 60, 111, 162, 213, 264)
SSD300_MAX_SIZES = (60, 111, 162, 213, 264, 315)
SSD300_ASPECT_RATIOS: tuple[tuple[int, ...], ...] = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))


def priors_per_cell(aspect_ratios: Sequence[Sequence[int]] = SSD300_ASPECT_RATIOS) -> list[int]:
    """Priors per feature-map cell for every source: 2 squares + 2 per aspect ratio."""
    return [2 + 2 * len(r) for r in aspect_ratios]


def ssd_priors(
    feature_sizes: Sequence[int],
    input_size: int = 300,
    aspect_ratios: Sequence[Sequence[int]] = SSD300_ASPECT_RATIOS,
    clip: bool = True,
) -> Tensor:
    """Prior boxes ``[P, 4]`` as ``(cx, cy, w, h)`` in [0, 1], in the heads' output order
    (source, row, column, prior-in-cell)."""
    if len(feature_sizes) != len(SSD300_MIN_SIZES) or len(aspect_ratios) != len(feature_sizes):
        raise ValueError(f"expected {len(SSD300_MIN_SIZES)} source maps, got {feature_sizes}")
    standard = input_size == 300 and tuple(feature_sizes) == SSD300_FEATURE_SIZES
    scale = input_size / 300
    out: list[list[float]] = []
    for k, f in enumerate(feature_sizes):
        step = SSD300_STEPS[k] if standard else input_size / f
        s_min = SSD300_MIN_SIZES[k] * scale / input_size
        s_max = SSD300_MAX_SIZES[k] * scale / input_size
        s_mid = math.sqrt(s_min * s_max)
        for i, j in itertools.product(range(f), repeat=2):
            cx, cy = (j + 0.5) * step / input_size, (i + 0.5) * step / input_size
            out.append([cx, cy, s_min, s_min])
            out.append([cx, cy, s_mid, s_mid])
            for r in aspect_ratios[k]:
                sr = math.sqrt(r)
                out.append([cx, cy, s_min * sr, s_min / sr])
                out.append([cx, cy, s_min / sr, s_min * sr])
    priors = torch.tensor(out, dtype=torch.float32)
    return priors.clamp_(0, 1) if clip else priors
