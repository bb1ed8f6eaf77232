"""PixelLink [24], PixelLink + G.Conv & C.Fusion and PixelLink++ with its Table III ablations.

Architecture (VGG16 "4s" variant): sources ``conv3_3`` (1/4), ``conv4_3`` (1/8), ``conv5_3``
(1/16) and ``fc7`` (1/16; pool5 3x3 stride 1, conv6 dilation 6) of :class:`models.vgg.VGGTrunk`.
Per source: optional SA@fusion, optional 1x1 channel fusion, then one 1x1 head with 2 pixel +
16 link channels; the head outputs are summed top-down FCN-style (bilinear upsampling) to 1/4
resolution, and a final 1x1 conv maps the summed pixel (2 -> 2) and link (16 -> 16) maps.

The paper gives none of these details; they follow the authors' PixelLink code (the model
behind the published PixelLink rows):

* trunk without BatchNorm: conv (with bias) + ReLU (initialised He fan-in, not as their code:
  see :mod:`models.vgg`);
* channel fusion = 1x1 conv + BatchNorm, no ReLU (the code's optional fusion BN is used, as in
  its GSSD; which setting the published runs used is not recorded there);
* the final 1x1 convs after the top-down sum; bilinear upsampling with ``align_corners=True``;
  heads, fusion and final convs Xavier-uniform with zero biases.

* ``pixellink``: one stream (``groups=1``) over the 12 channels, no channel fusion.
* ``pixellink_gconv``: grouped trunk (one group per phase) + 1x1 channel fusion per source.
* ``pixellink_pp``: the grouped model + SA@base at the four sources (replacing the trunk
  features, D = 2) + SA@fusion on each source branch + the DC module after ``conv3_3``'s SA
  (fed with SA@base's gated map ``sigma * Wo g``, phase-wise offsets). DC parameters train at
  0.1x the LR.

Loss (PixelLink): ``2 * pixel + 1 * link``. Pixel: softmax cross-entropy with instance-balanced
weights on positives (each of the ``N`` boxes of an image gets total weight ``S / N``, ``S`` =
positive pixels) and online hard negative mining of the ``3 S`` hardest negatives, divided by
``4 S``; an image without positive pixels mines ``3 x 64`` negatives. Link: cross-entropy on
positive pixels only, positive and negative links each normalised by their total pixel weight.
Targets and decoding (pixel threshold 0.2, link threshold 0.8, minimum box area 3 px^2):
:mod:`models.pixellink_decode`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from models.attention import SelfAttention
from models.base import IN_CHANNELS, NUM_PHASES, Detector
from models.deform import DCModule
from models.pixellink_decode import (
    LINK_THRESHOLD,
    MIN_AREA,
    NEIGHBOURS,
    PIXEL_THRESHOLD,
    decode,
    instance_map,
    link_targets,
)
from models.registry import register_model
from models.vgg import VGGTrunk

SOURCES = ("conv3_3", "conv4_3", "conv5_3", "fc7")
_OUT = 2 + 2 * len(NEIGHBOURS)  # pixel (2) + link (16)
_NEG_RATIO = 3
_NEG_WITHOUT_POSITIVES = 64
_SA_POOL = 2  # D for PixelLink++ (paper section V-A)


def _xavier_conv(in_ch: int, out_ch: int, bias: bool = True) -> nn.Conv2d:
    """1x1 conv initialised as the authors' PixelLink: Xavier-uniform weights, zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, 1, bias=bias)
    nn.init.xavier_uniform_(conv.weight)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def _head(channels: int) -> nn.Conv2d:
    """The 1x1 head, 2 pixel + 16 link channels: the code's two 1x1 convs in one, each part
    initialised as its own conv (Xavier-uniform over its own fan-out)."""
    conv = _xavier_conv(channels, _OUT)
    with torch.no_grad():
        nn.init.xavier_uniform_(conv.weight[:2])
        nn.init.xavier_uniform_(conv.weight[2:])
    return conv


def _fusion(channels: int) -> nn.Sequential:
    """1x1 channel fusion: conv + BatchNorm, no ReLU (a conv bias would be cancelled by BN)."""
    return nn.Sequential(_xavier_conv(channels, channels, bias=False), nn.BatchNorm2d(channels))


class PixelLink(Detector):
    """PixelLink detector; the flags switch on the G.Conv/C.Fusion and PixelLink++ parts."""

    def __init__(
        self,
        *,
        input_size: int = 300,
        width: float = 1.0,
        groups: int = 1,
        channel_fusion: bool = False,
        sa_base: bool = False,
        sa_fusion: bool = False,
        sa_groups: int = 1,
        dc: bool = False,
        phase_wise_offsets: bool = True,
        pixel_threshold: float = PIXEL_THRESHOLD,
        link_threshold: float = LINK_THRESHOLD,
        min_area: float = MIN_AREA,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.pixel_threshold, self.link_threshold, self.min_area = (
            pixel_threshold,
            link_threshold,
            min_area,
        )
        self.trunk = VGGTrunk(in_channels=IN_CHANNELS, groups=groups, width=width, batch_norm=False)
        ch = self.trunk.channels
        self.map_size = self.trunk.feature_sizes(input_size)["conv3_3"]

        def per_source(make: Any) -> nn.ModuleDict:
            return nn.ModuleDict({s: make(ch[s]) for s in SOURCES})

        self.sa_base = (
            per_source(lambda c: SelfAttention(c, pool=_SA_POOL, groups=sa_groups))
            if sa_base
            else None
        )
        self.sa_fusion = (
            per_source(lambda c: SelfAttention(c, pool=_SA_POOL, groups=sa_groups))
            if sa_fusion
            else None
        )
        attention = ch["conv3_3"] if self.sa_base is not None else 0
        self.dc = (
            DCModule(
                ch["conv3_3"], attention, phases=NUM_PHASES, phase_wise_offsets=phase_wise_offsets
            )
            if dc
            else None
        )
        self.fusion = per_source(_fusion) if channel_fusion else None
        self.heads = per_source(_head)
        self.final_pixel = _xavier_conv(2, 2)
        self.final_link = _xavier_conv(_OUT - 2, _OUT - 2)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """DC-module parameters at 0.1x ``lr`` (paper appendix B), the rest at ``lr``."""
        if self.dc is None:
            return super().param_groups(lr)
        dc_ids = {id(p) for p in self.dc.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in dc_ids]
        return [
            {"params": rest, "lr": lr},
            {
                "params": [p for p in self.dc.parameters() if p.requires_grad],
                "lr": 0.1 * lr,
                "name": "dc",
            },
        ]

    def score_maps(self, images: Tensor) -> Tensor:
        """Raw outputs ``[B, 18, H/4, W/4]``: pixel logits (2) then link logits (8 x 2)."""
        feats: dict[str, Tensor] = {}
        x = images
        for name, stage in self.trunk.stages.items():
            x = stage(x)
            if name not in SOURCES:
                continue
            attention = None
            if self.sa_base is not None:
                x, attention = self.sa_base[name](x, return_gated=True)
            if name == "conv3_3" and self.dc is not None:
                x = self.dc(x, attention)
            feats[name] = x
        outs = {}
        for name, f in feats.items():
            if self.sa_fusion is not None:
                f = self.sa_fusion[name](f)
            if self.fusion is not None:
                f = self.fusion[name](f)
            outs[name] = self.heads[name](f)
        y = outs["fc7"] + outs["conv5_3"]
        for name in ("conv4_3", "conv3_3"):
            y = outs[name] + F.interpolate(
                y, size=outs[name].shape[-2:], mode="bilinear", align_corners=True
            )
        return torch.cat([self.final_pixel(y[:, :2]), self.final_link(y[:, 2:])], 1)

    def _stride(self, maps: Tensor, images: Tensor) -> tuple[float, float]:
        return images.shape[-2] / maps.shape[-2], images.shape[-1] / maps.shape[-1]

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        maps = self.score_maps(images).float()  # float32 losses/decoding under autocast
        stride = self._stride(maps, images)
        if self.training:
            if targets is None:
                raise ValueError("PixelLink needs targets in training mode")
            return self._loss(maps, targets, stride)
        return self._detect(maps, stride)

    def _loss(
        self, maps: Tensor, targets: list[dict[str, Tensor]], stride: tuple[float, float]
    ) -> dict[str, Tensor]:
        h, w = maps.shape[-2:]
        pixel_losses, link_losses = [], []
        for out, tgt in zip(maps, targets, strict=True):
            inst = instance_map(tgt["boxes"].to(out.device), h, w, stride)
            pixel, weight = _pixel_loss(out[:2], inst)
            pixel_losses.append(pixel)
            link_losses.append(_link_loss(out[2:], inst, weight))
        return {
            "pixel": 2.0 * torch.stack(pixel_losses).mean(),
            "link": torch.stack(link_losses).mean(),
        }

    @torch.no_grad()
    def _detect(self, maps: Tensor, stride: tuple[float, float]) -> list[dict[str, Tensor]]:
        b, _, h, w = maps.shape
        pixel = torch.softmax(maps[:, :2], 1)[:, 1].cpu().numpy()
        link = torch.softmax(maps[:, 2:].reshape(b, len(NEIGHBOURS), 2, h, w), 2)[:, :, 1]
        link = link.cpu().numpy()
        out = []
        for i in range(b):
            boxes, scores = decode(
                pixel[i], link[i], stride, self.pixel_threshold, self.link_threshold, self.min_area
            )
            out.append(
                {
                    "boxes": torch.from_numpy(boxes).to(maps.device),
                    "scores": torch.from_numpy(scores).to(maps.device),
                }
            )
        return out


def _pixel_loss(logits: Tensor, inst: Tensor) -> tuple[Tensor, Tensor]:
    """Instance-balanced, OHEM pixel loss and the per-pixel positive weights ``[H, W]``."""
    pos = inst > 0
    ce = F.cross_entropy(logits[None], pos.long()[None], reduction="none")[0]
    n_pos = int(pos.sum())
    weight = torch.zeros_like(ce)
    if n_pos:
        area = torch.bincount(inst[pos])
        n_inst = int((area > 0).sum())
        weight[pos] = (n_pos / n_inst) / area[inst[pos]].float()
    neg_ce = ce[~pos]
    n_neg = min(len(neg_ce), _NEG_RATIO * (n_pos or _NEG_WITHOUT_POSITIVES))
    hard = neg_ce.topk(n_neg).values.sum() if n_neg else ce.sum() * 0.0
    loss = ((weight * ce).sum() + hard) / max(1, n_pos + n_neg)
    return loss, weight


def _link_loss(logits: Tensor, inst: Tensor, weight: Tensor) -> Tensor:
    """Class-balanced link loss on positive pixels, weighted by the instance-balanced weights."""
    h, w = inst.shape
    pos_link = link_targets(inst)  # [8, H, W]
    logp = torch.log_softmax(logits.reshape(len(NEIGHBOURS), 2, h, w), 1)
    ce = -torch.where(pos_link, logp[:, 1], logp[:, 0])
    on_pos = (inst > 0)[None]
    w_pos = weight[None] * pos_link
    w_neg = weight[None] * (on_pos & ~pos_link)
    loss = logits.sum() * 0.0
    for wt in (w_pos, w_neg):
        total = wt.sum()
        if total > 0:
            loss = loss + (wt * ce).sum() / total
    return loss


_GCONV: dict[str, Any] = {"groups": NUM_PHASES, "channel_fusion": True}
_PP: dict[str, Any] = {**_GCONV, "sa_base": True, "sa_fusion": True, "dc": True}


def _pixellink(
    architecture: dict[str, Any],
    input_size: int,
    width: float,
    pixel_threshold: float,
    link_threshold: float,
    min_area: float,
) -> PixelLink:
    return PixelLink(
        input_size=input_size, width=width, pixel_threshold=pixel_threshold,
        link_threshold=link_threshold, min_area=min_area, **architecture,
    )


# Every PixelLink row takes the same settings; the row fixes the architecture. The thresholds
# and ``min_area`` decode instances from the pixel and link maps.


@register_model(
    "pixellink",
    paper_row="PixelLink [24]",
    table="I",
    description="PixelLink (VGG16 4s), the 12 channels as one stream",
)
def build_pixellink(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink [24]: PixelLink (VGG16 4s), the 12 channels as one stream."""
    return _pixellink({}, input_size, width, pixel_threshold, link_threshold, min_area)


@register_model(
    "pixellink_gconv",
    paper_row="PixelLink + G.Conv & C.Fusion",
    table="I",
    description="PixelLink with grouped VGG16 (one group per phase) "
    "+ 1x1 channel fusion per source",
)
def build_pixellink_gconv(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink + G.Conv & C.Fusion: PixelLink with grouped VGG16 (one group per phase) + 1x1
    channel fusion per source."""
    return _pixellink(_GCONV, input_size, width, pixel_threshold, link_threshold, min_area)


@register_model(
    "pixellink_pp",
    paper_row="PixelLink++ (ours)",
    table="I",
    description="PixelLink + G.Conv & C.Fusion + SA@base/@fusion "
    "(D=2) + phase-wise DC after conv3_3",
)
def build_pixellink_pp(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink++ (ours): PixelLink + G.Conv & C.Fusion + SA@base/@fusion (D=2) + phase-wise DC
    after conv3_3."""
    return _pixellink(_PP, input_size, width, pixel_threshold, link_threshold, min_area)


@register_model(
    "pixellink_pp_no_phase_offsets",
    paper_row="PixelLink++ w/o Phase-wise Offsets",
    table="III",
    description="PixelLink++ with one offset group in the DC module",
)
def build_pixellink_pp_no_phase_offsets(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink++ w/o Phase-wise Offsets: PixelLink++ with one offset group in the DC module."""
    return _pixellink(
        {**_PP, "phase_wise_offsets": False},
        input_size, width, pixel_threshold, link_threshold, min_area
    )


@register_model(
    "pixellink_pp_no_dc",
    paper_row="PixelLink++ w/o DC Module",
    table="III",
    description="PixelLink++ without the DC module",
)
def build_pixellink_pp_no_dc(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink++ w/o DC Module: PixelLink++ without the DC module."""
    return _pixellink(
        {**_PP, "dc": False}, input_size, width, pixel_threshold, link_threshold, min_area
    )


@register_model(
    "pixellink_pp_no_sa_base",
    paper_row="PixelLink++ w/o SA Modules@Base",
    table="III",
    description="PixelLink++ without SA at the trunk sources (DC sees the feature alone)",
)
def build_pixellink_pp_no_sa_base(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink++ w/o SA Modules@Base: PixelLink++ without SA at the trunk sources (DC sees the
    feature alone)."""
    return _pixellink(
        {**_PP, "sa_base": False}, input_size, width, pixel_threshold, link_threshold, min_area
    )


@register_model(
    "pixellink_pp_no_sa_fusion",
    paper_row="PixelLink++ w/o SA Modules@Fusion",
    table="III",
    description="PixelLink++ without SA before the 1x1 fusion",
)
def build_pixellink_pp_no_sa_fusion(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink++ w/o SA Modules@Fusion: PixelLink++ without SA before the 1x1 fusion."""
    return _pixellink(
        {**_PP, "sa_fusion": False}, input_size, width, pixel_threshold, link_threshold, min_area
    )


@register_model(
    "pixellink_pp_no_interphase",
    paper_row="PixelLink++ w/o Interphase Attention",
    table="III",
    description="PixelLink++ with grouped (per-phase) SA modules",
)
def build_pixellink_pp_no_interphase(
    input_size: int = 300,
    width: float = 1.0,
    pixel_threshold: float = PIXEL_THRESHOLD,
    link_threshold: float = LINK_THRESHOLD,
    min_area: float = MIN_AREA,
) -> PixelLink:
    """PixelLink++ w/o Interphase Attention: PixelLink++ with grouped (per-phase) SA modules."""
    return _pixellink(
        {**_PP, "sa_groups": NUM_PHASES},
        input_size, width, pixel_threshold, link_threshold, min_area
    )
