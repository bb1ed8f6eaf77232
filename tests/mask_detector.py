"""A small lesion-mask detector registered as ``tiny_mask_test`` for the positive control.

A five-layer fully convolutional body at 1/2 resolution predicts a lesion probability per
pixel, trained with BCE + soft Dice on the lesion masks (dense supervision learns from a few
dozen slices in about a minute on a CPU, which box detectors do not). Boxes are the connected
components of the probability map above 0.5, scored by their peak probability. It reads all 12 channels, so
when the other phases move away from the portal phase its masks, and boxes, move with them.
Kept in tests/ only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from models.base import IN_CHANNELS, Detector, Supervision
from models.registry import register_model


class TinyMaskDetector(Detector):
    supervision = frozenset({Supervision.BOXES, Supervision.MASKS})

    def __init__(self, input_size: int = 64, width: float = 1.0):
        super().__init__()
        self.input_size = input_size
        c = max(8, int(24 * width))

        def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            )

        self.body = nn.Sequential(
            block(IN_CHANNELS, c, 2),
            block(c, c),
            block(c, c, dilation=2),
            block(c, c, dilation=4),
            block(c, c, dilation=8),
        )
        self.head = nn.Conv2d(c, 1, 1)
        nn.init.constant_(self.head.bias, -4.6)  # prior 0.01 (RetinaNet's): lesions are rare

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        logits = F.interpolate(
            self.head(self.body(images)), size=images.shape[-2:], mode="bilinear"
        )[:, 0]
        if self.training:
            gt = torch.stack([t["masks"].float() for t in targets or []])
            prob = logits.sigmoid()
            dice = 1 - (2 * (prob * gt).sum() + 1) / (prob.sum() + gt.sum() + 1)
            return {"bce": F.binary_cross_entropy_with_logits(logits, gt), "dice": dice}
        return [self._boxes(p) for p in logits.sigmoid()]

    @staticmethod
    def _boxes(prob: Tensor) -> dict[str, Tensor]:
        p = prob.detach().cpu().numpy()
        labels, n = ndimage.label(p > 0.5)
        boxes = np.array(
            [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(labels)],
            dtype=np.float32,
        ).reshape(-1, 4)
        peaks = np.array(ndimage.maximum(p, labels, np.arange(1, n + 1)), np.float32).reshape(-1)
        order = np.argsort(-peaks, kind="stable")
        return {"boxes": torch.from_numpy(boxes[order]), "scores": torch.from_numpy(peaks[order])}


@register_model("tiny_mask_test", description="test-only lesion-mask detector")
def build_tiny_mask(input_size: int = 64, width: float = 1.0) -> TinyMaskDetector:
    """Test-only lesion-mask detector (positive control)."""
    return TinyMaskDetector(input_size, width)
