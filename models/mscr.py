"""MSCR baseline (paper ref. [17]): multi-stream CNN with recurrent fusion across phases.

The MSCR paper is not available here: this detector is built from the description the GSSD++
paper and the issue give ("a multi-stream CNN per phase with recurrent fusion across phases and a
scale-insensitive loss"), not from the original code or paper. Choices made:

* **Streams**: one VGG-style CNN per phase with *separate* weights (no sharing), so a phase's
  contrast pattern can get its own filters. The four streams run as one grouped convolution
  (``groups=4`` on the phase-major 12 channels), which is exactly four independent streams.
* **Recurrent fusion**: a ConvGRU reads the four phase feature maps in acquisition order
  (precontrast, arterial, portal, delayed) at strides 4, 8 and 16; its last hidden state is the
  fused feature. The three fused maps are summed top-down (FPN-style) to stride 4.
* **Head**: anchor-free (FCOS-like) at stride 4: a lesion logit and four distances (left, top,
  right, bottom) per location. Positives: locations whose centre lies inside a box (the smallest
  box when several contain it; a box containing no centre takes the location nearest to its
  centre).
* **Scale-insensitive loss**: sigmoid focal loss for the lesion logit plus the generalised-IoU
  loss for the boxes (invariant to box scale), where each positive location is weighted by
  ``1 / (number of positive locations of its box)`` so every lesion counts the same whatever its
  size.
* **Decoding**: score > 0.01, top 1000, NMS at IoU 0.45, at most 200 boxes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from models.base import IN_CHANNELS, NUM_PHASES, Detector
from models.registry import register_model

_STREAM_WIDTHS = (32, 64, 128, 128)  # per phase, at width 1.0
_FUSION_WIDTH = 128
_STRIDE = 4


def _ch(base: int, width: float) -> int:
    return max(4, int(round(base * width)))


class ConvGRUCell(nn.Module):
    """Convolutional GRU cell (3x3 gates)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 2 * hidden, 3, padding=1)
        self.candidate = nn.Conv2d(in_channels + hidden, hidden, 3, padding=1)

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        reset, update = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, dim=1)
        cand = torch.tanh(self.candidate(torch.cat([x, reset * h], 1)))
        return (1 - update) * h + update * cand


class PhaseRecurrentFusion(nn.Module):
    """Runs a ConvGRU over the phase axis of a phase-major feature map ``[B, 4*C, H, W]``."""

    def __init__(self, channels_per_phase: int, hidden: int) -> None:
        super().__init__()
        self.cell = ConvGRUCell(channels_per_phase, hidden)

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        phases = x.view(b, NUM_PHASES, c // NUM_PHASES, hgt, wid).unbind(1)
        h = x.new_zeros(b, self.cell.hidden, hgt, wid)
        for feat in phases:
            h = self.cell(feat, h)
        return h


def _grouped_block(cin: int, cout: int, n_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [
            nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, groups=NUM_PHASES, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 2, ceil_mode=True)


def _centres(height: int, width: int, device: torch.device) -> Tensor:
    """Input-pixel centres ``[H * W, 2]`` (x, y) of the stride-4 locations, row-major."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * _STRIDE
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * _STRIDE
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([cx.flatten(), cy.flatten()], 1)


class MSCR(Detector):
    """Multi-stream (one CNN per phase) + ConvGRU phase fusion + anchor-free head."""

    def __init__(self, input_size: int = 300, width: float = 1.0) -> None:
        super().__init__()
        self.input_size = input_size
        w = [_ch(c, width) * NUM_PHASES for c in _STREAM_WIDTHS]
        fused = _ch(_FUSION_WIDTH, width)
        self.stage1 = _grouped_block(IN_CHANNELS, w[0], 2)  # stride 1, pooled to 2
        self.stage2 = _grouped_block(w[0], w[1], 2)  # stride 2 -> output at 4
        self.stage3 = _grouped_block(w[1], w[2], 3)  # stride 8
        self.stage4 = _grouped_block(w[2], w[3], 3)  # stride 16
        self.fuse = nn.ModuleList(
            PhaseRecurrentFusion(c // NUM_PHASES, fused) for c in (w[1], w[2], w[3])
        )
        self.head = nn.Sequential(nn.Conv2d(fused, fused, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(fused, 1, 3, padding=1)
        self.reg = nn.Conv2d(fused, 4, 3, padding=1)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.constant_(self.cls.bias, -math.log(99.0))  # prior probability 0.01
        nn.init.normal_(self.reg.weight, std=0.01)
        nn.init.zeros_(self.reg.bias)
        self.score_thresh, self.nms_thresh, self.topk, self.max_dets = 0.01, 0.45, 1000, 200

    def _maps(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Lesion logits ``[B, P]``, distances ``[B, P, 4]`` and location centres ``[P, 2]``."""
        c2 = self.stage2(_pool(self.stage1(images)))
        c3 = self.stage3(_pool(c2))
        c4 = self.stage4(_pool(c3))
        f2, f3, f4 = (fuse(c) for fuse, c in zip(self.fuse, (c2, c3, c4), strict=True))
        f3 = f3 + F.interpolate(f4, size=f3.shape[-2:], mode="nearest")
        f2 = f2 + F.interpolate(f3, size=f2.shape[-2:], mode="nearest")
        x = self.head(f2)  # stride 4
        logits = self.cls(x).float().flatten(1)  # float32 losses/boxes under autocast
        dist = torch.exp(self.reg(x).float().clamp(max=8.0)) * _STRIDE
        return logits, dist.flatten(2).transpose(1, 2), _centres(*x.shape[-2:], images.device)

    @staticmethod
    def _decode(centres: Tensor, dist: Tensor) -> Tensor:
        return torch.cat([centres - dist[..., :2], centres + dist[..., 2:]], -1)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        logits, dist, centres = self._maps(images)
        if self.training:
            if targets is None:
                raise ValueError("MSCR needs targets in training mode")
            return self._loss(logits, dist, centres, targets)
        return self._detect(logits, dist, centres)

    def _assign(self, boxes: Tensor, centres: Tensor) -> tuple[Tensor, Tensor]:
        """Per location the matched box index (-1: background) and its loss weight."""
        n_loc = centres.shape[0]
        match = torch.full((n_loc,), -1, dtype=torch.long, device=centres.device)
        weight = torch.zeros(n_loc, device=centres.device)
        if len(boxes) == 0:
            return match, weight
        cx, cy = centres[:, 0:1], centres[:, 1:2]
        inside = (cx > boxes[:, 0]) & (cx < boxes[:, 2]) & (cy > boxes[:, 1]) & (cy < boxes[:, 3])
        box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        nearest = torch.cdist(box_centres, centres).argmin(1)  # boxes too small to hold a centre
        inside[nearest, torch.arange(len(boxes), device=boxes.device)] = True
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        cost = torch.where(
            inside, area.expand_as(inside), torch.full_like(inside, math.inf, dtype=area.dtype)
        )
        best_cost, best = cost.min(1)
        pos = torch.isfinite(best_cost)
        match[pos] = best[pos]
        counts = torch.bincount(best[pos], minlength=len(boxes)).clamp(min=1)
        weight[pos] = 1.0 / counts[best[pos]].float()
        return match, weight

    def _loss(
        self, logits: Tensor, dist: Tensor, centres: Tensor, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        cls_losses, box_losses = [], []
        for lg, ds, tgt in zip(logits, dist, targets, strict=True):
            boxes = tgt["boxes"].to(lg.device, torch.float32)
            match, weight = self._assign(boxes, centres)
            pos = match >= 0
            n_obj = max(1, len(boxes))
            cls_losses.append(
                sigmoid_focal_loss(lg, pos.float(), reduction="sum") / max(1, int(pos.sum()))
            )
            if pos.any():
                pred = self._decode(centres[pos], ds[pos])
                giou = generalized_box_iou_loss(pred, boxes[match[pos]], reduction="none")
                box_losses.append((giou * weight[pos]).sum() / n_obj)
            else:
                box_losses.append(ds.sum() * 0.0)
        return {
            "classification": torch.stack(cls_losses).mean(),
            "box_giou": torch.stack(box_losses).mean(),
        }

    def _detect(self, logits: Tensor, dist: Tensor, centres: Tensor) -> list[dict[str, Tensor]]:
        out = []
        for lg, ds in zip(logits, dist, strict=True):
            scores = torch.sigmoid(lg)
            keep = torch.nonzero(scores > self.score_thresh).flatten()
            keep = keep[scores[keep].topk(min(self.topk, len(keep))).indices]
            boxes = self._decode(centres[keep], ds[keep]).clamp(0, self.input_size)
            sc = scores[keep]
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, sc = boxes[valid], sc[valid]
            kept = batched_nms(boxes, sc, torch.zeros_like(sc, dtype=torch.long), self.nms_thresh)
            kept = kept[: self.max_dets]
            out.append({"boxes": boxes[kept], "scores": sc[kept]})
        return out


@register_model(
    "mscr",
    paper_row="MSCR [17]",
    table="I",
    description=(
        "MSCR: one CNN stream per phase, ConvGRU fusion over phases, anchor-free head, "
        "GIoU + focal loss (rebuilt from the paper's description; MSCR paper not available)"
    ),
)
def build_mscr(input_size: int = 300, width: float = 1.0) -> MSCR:
    """MSCR [17], rebuilt from its description (the MSCR paper is not available here)."""
    return MSCR(input_size=input_size, width=width)
