"""A small anchor-free detector (FCOS-like) registered as ``example_fcos``.

Every cell of a stride-8 grid predicts a lesion logit and its distances to the four box sides.
Training: a cell is positive when its centre lies inside a ground-truth box (the smallest one if
several); BCE on the logits of all cells + L1 on the log-distances of positive cells.
Eval: sigmoid scores, decode, NMS, top 100, sorted by score.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms

from models import Detector, Supervision, register_model
from models.base import IN_CHANNELS, NUM_PHASES

STRIDE = 8


class ExampleFCOS(Detector):
    supervision = frozenset({Supervision.BOXES})

    def __init__(self, input_size: int = 128, width: float = 1.0) -> None:
        super().__init__()
        self.input_size = input_size
        c = NUM_PHASES * max(2, round(16 * width))  # channels divisible by the 4 phase groups
        layers: list[nn.Module] = []
        cin = IN_CHANNELS
        for _ in range(3):  # three stride-2 convs; grouped: one stream per phase
            layers += [nn.Conv2d(cin, c, 3, 2, 1, groups=NUM_PHASES), nn.BatchNorm2d(c), nn.ReLU()]
            cin = c
        layers += [nn.Conv2d(c, c, 1), nn.ReLU()]  # 1x1 channel fusion across phases
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 5, 3, padding=1)  # logit + 4 log-distances (l, t, r, b)

    def _centres(self, h: int, w: int, device: torch.device) -> Tensor:
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
        )
        return torch.stack([xs, ys], -1).reshape(-1, 2).float().add(0.5).mul(STRIDE)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        out = self.head(self.body(images))  # [B, 5, h, w]
        b, _, h, w = out.shape
        out = out.permute(0, 2, 3, 1).reshape(b, h * w, 5)
        centres = self._centres(h, w, images.device)
        if self.training:
            return self._loss(out, centres, targets or [])
        return self._decode(out, centres)

    def _loss(self, out: Tensor, centres: Tensor, targets: list[dict[str, Tensor]]):
        cls_loss, box_loss, n_pos = out.new_zeros(()), out.new_zeros(()), 0
        for pred, t in zip(out, targets, strict=True):
            boxes = t["boxes"].to(out)
            goal = torch.zeros_like(pred[:, 0])
            if len(boxes):
                dist = torch.cat(
                    [centres[:, None] - boxes[None, :, :2], boxes[None, :, 2:] - centres[:, None]],
                    -1,
                )  # [cells, N, 4]
                inside = dist.min(-1).values > 0
                area = (boxes[:, 2:] - boxes[:, :2]).prod(-1).expand_as(inside)
                best = area.masked_fill(~inside, float("inf")).argmin(1)
                pos = inside.any(1)
                goal[pos] = 1.0
                want = dist[pos, best[pos]].clamp(min=1).log()
                box_loss = box_loss + F.l1_loss(pred[pos, 1:], want, reduction="sum")
                n_pos += int(pos.sum())
            cls_loss = cls_loss + F.binary_cross_entropy_with_logits(
                pred[:, 0], goal, reduction="sum"
            )
        n = max(n_pos, 1)
        return {"loss_cls": cls_loss / n, "loss_box": box_loss / n}

    @torch.no_grad()
    def _decode(self, out: Tensor, centres: Tensor) -> list[dict[str, Tensor]]:
        results = []
        for pred in out:
            scores = pred[:, 0].sigmoid()
            d = pred[:, 1:].clamp(max=8).exp()
            boxes = torch.cat([centres - d[:, :2], centres + d[:, 2:]], -1)
            boxes = boxes.clamp(0, self.input_size)
            keep = nms(boxes, scores, 0.45)[:100]  # indices sorted by descending score
            results.append({"boxes": boxes[keep], "scores": scores[keep]})
        return results


@register_model("example_fcos", description="example third-party anchor-free detector")
def example_fcos(input_size: int = 128, width: float = 1.0) -> ExampleFCOS:
    """Example third-party anchor-free detector."""
    return ExampleFCOS(input_size=input_size, width=width)
