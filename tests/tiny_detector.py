"""A small centre-heatmap detector registered as ``tiny_test`` for the loop tests.

Stride-4 conv body; a heatmap of lesion centres (CenterNet focal loss on Gaussian targets) and
the log box size at each centre. Decoding: 3x3 max-pool peaks, top 20. Kept in tests/ only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from models.base import IN_CHANNELS, Detector
from models.registry import register_model

STRIDE = 4


class TinyDetector(Detector):
    def __init__(self, input_size: int = 64, width: float = 1.0, fail_after: int = -1):
        super().__init__()
        self.input_size = input_size
        c = max(8, int(32 * width))

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.body = nn.Sequential(block(IN_CHANNELS, c, 2), block(c, c, 2), block(c, c, 1))
        self.heat = nn.Conv2d(c, 1, 1)
        self.size = nn.Conv2d(c, 2, 1)
        nn.init.constant_(self.heat.bias, -2.19)
        self.fail_after = fail_after  # >= 0: return a NaN loss after that many training calls
        self.calls = 0

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        feat = self.body(images)
        heat, size = self.heat(feat)[:, 0], self.size(feat)
        if self.training:
            self.calls += 1
            losses = self._loss(heat, size, targets or [])
            if 0 <= self.fail_after < self.calls:
                losses["heat"] = losses["heat"] * float("nan")
            return losses
        return self._decode(heat.sigmoid(), size)

    def _loss(self, heat: Tensor, size: Tensor, targets: list[dict[str, Tensor]]) -> dict:
        b, h, w = heat.shape
        ys = (torch.arange(h, device=heat.device) + 0.5) * STRIDE
        xs = (torch.arange(w, device=heat.device) + 0.5) * STRIDE
        goal = torch.zeros_like(heat)
        size_loss = heat.new_zeros(())
        n_boxes = 0
        for i, t in enumerate(targets):
            for box in t["boxes"]:
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                bw, bh = (box[2] - box[0]).clamp(min=1), (box[3] - box[1]).clamp(min=1)
                sigma = torch.clamp(torch.minimum(bw, bh) / 6, min=1.0)
                g = torch.exp(-((xs[None] - cx) ** 2 + (ys[:, None] - cy) ** 2) / (2 * sigma**2))
                goal[i] = torch.maximum(goal[i], g)
                gy = int((cy / STRIDE).clamp(0, h - 1))
                gx = int((cx / STRIDE).clamp(0, w - 1))
                goal[i, gy, gx] = 1.0
                want = torch.log(torch.stack([bw, bh]) / STRIDE)
                size_loss = size_loss + F.l1_loss(size[i, :, gy, gx], want, reduction="sum")
                n_boxes += 1
        p = heat.sigmoid().clamp(1e-4, 1 - 1e-4)
        pos = goal.eq(1).float()
        focal = -(pos * (1 - p) ** 2 * p.log() + (1 - pos) * (1 - goal) ** 4 * p**2 * (1 - p).log())
        n = max(n_boxes, 1)
        return {"heat": focal.sum() / n, "size": 0.1 * size_loss / n}

    def _decode(self, heat: Tensor, size: Tensor) -> list[dict[str, Tensor]]:
        peaks = heat * (F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0] == heat)
        out = []
        w = heat.shape[2]
        for i in range(heat.shape[0]):
            scores, idx = peaks[i].flatten().topk(min(20, peaks[i].numel()))
            gy, gx = idx // w, idx % w
            cx, cy = (gx + 0.5) * STRIDE, (gy + 0.5) * STRIDE
            bw = size[i, 0, gy, gx].exp() * STRIDE
            bh = size[i, 1, gy, gx].exp() * STRIDE
            boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
            out.append({"boxes": boxes.clamp(0, self.input_size), "scores": scores})
        return out


@register_model("tiny_test", description="test-only centre-heatmap detector")
def build_tiny(input_size: int = 64, width: float = 1.0, fail_after: int = -1) -> TinyDetector:
    """Test-only centre-heatmap detector."""
    return TinyDetector(input_size, width, fail_after)
