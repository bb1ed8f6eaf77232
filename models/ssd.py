"""SSD family: SSD, GSSD, GSSD (portal only), GSSD++ and its Table III ablations.

One configurable :class:`SSDDetector` (SSD300-VGG16-BN) and one registered builder per paper row.

* ``ssd`` (Table I "SSD [23]"): the 12 channels as one stream (``groups=1``), no channel fusion.
* ``gssd`` ("GSSD [15]"): VGG16 and extras grouped by phase (``groups=4``), then on every source
  an ungrouped 1x1 channel-fusion conv + BN + ReLU before the heads.
* ``gssd_portal`` ("GSSD [15] (Portal Only)"): the GSSD network itself (four phase groups,
  channel fusion, the same parameters) fed the portal phase in every group: the model takes the
  usual ``[B, 12, H, W]`` batch and builds its input from channels 6:9 alone (portal z-1, z,
  z+1, see :mod:`models.base`), copied into all four phase slots; the other nine channels are
  never read. The paper only says the baseline was trained "using only the portal phase
  images"; this follows the authors' code, whose portal-only switch copies the portal phase
  into all four phases of the grouped model's input.
* ``gssd_pp`` ("GSSD++ (ours)"): GSSD + an SA module after every source layer of the trunk
  (SA@base, replacing the feature passed on) + an SA module on every source branch before its
  1x1 fusion (SA@fusion) + one DC module at conv4_3 after SA@base, fed SA@base's gated map
  ``sigma * Wo g``; D = 1. The DC output replaces conv4_3 for the L2Norm source and for pool4
  onward.
* ablations (Table III): ``gssd_pp_no_phase_offsets`` (one offset group), ``gssd_pp_no_dc``,
  ``gssd_pp_no_sa_base`` (the DC module then sees the feature alone: no SA map exists),
  ``gssd_pp_no_sa_fusion``, ``gssd_pp_no_interphase`` (grouped convs and per-phase attention
  inside every SA module).

Paper-vs-code choices live with the modules: spectral norm and the gated map handed to DC in
SA (:mod:`models.attention`), the 2C-channel DC input and per-phase dconv weights in DC
(:mod:`models.deform`).

Heads: ungrouped 3x3 convs, ``k*4`` loc and ``k*2`` conf (background, lesion) with
k = 4,6,6,6,4,4. L2Norm (learnable, init 20) on conv4_3. All convs use BN (no pretraining, as
the authors' code; also for the ``ssd`` baseline so the rows differ only in grouping/fusion).

Small inputs: the last two extras are 3x3 "valid" convs (5 -> 3 -> 1 at 300 px); where a map is
already smaller than 3 they pad by 1 instead, so inputs down to ~64 px work. Priors follow the
actual map sizes (:mod:`models.priors`); at 300 px they are the standard 8732 SSD300 priors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from models.attention import SelfAttention
from models.base import IN_CHANNELS, NUM_PHASES, SLICES_PER_PHASE, Detector
from models.deform import DCModule
from models.multibox import detect, multibox_loss
from models.priors import priors_per_cell, ssd_priors
from models.registry import register_model
from models.vgg import VGGTrunk, conv_bn_relu, scaled_channels, spatial_size

PORTAL_CHANNELS = tuple(range(2 * SLICES_PER_PHASE, 3 * SLICES_PER_PHASE))  # 6, 7, 8
PORTAL_IN_EVERY_PHASE = PORTAL_CHANNELS * NUM_PHASES  # the portal phase in all four groups
# (1x1 reduce, 3x3 out, stride): two s2 convs then two "valid" convs
_EXTRAS = ((256, 512, 2), (128, 256, 2), (128, 256, 1), (128, 256, 1))


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learnable per-channel scale (SSD conv4_3)."""

    def __init__(self, channels: int, scale: float = 20.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(1, keepdim=True).sqrt().clamp(min=1e-10)
        return x / norm * self.weight.view(1, -1, 1, 1)


class SSDDetector(Detector):
    """SSD300-VGG16-BN with optional phase grouping, channel fusion, SA and DC modules.

    Args:
        input_size: side of the square input (300 as the paper).
        width: channel multiplier of trunk and extras (1.0 = paper).
        groups: phase groups of trunk and extras (4 = GSSD, 1 = one stream).
        input_channels: indices of the 12 input channels that make up the model's input, in
            order, repeats allowed (None = all 12 as given).
        channel_fusion: 1x1 conv + BN + ReLU on every source before the heads.
        sa_base, sa_fusion: SA modules after every trunk source / before every fusion conv.
        sa_groups: 1 = interphase attention; ``groups`` = "w/o Interphase Attention".
        sa_pool: D of the SA modules; sa_spectral_norm: see :mod:`models.attention`.
        dc: DC module at conv4_3 (after SA@base when present).
        dc_phase_wise_offsets: one offset group per phase (False = one shared field).
        dc_weight_groups: groups of the deformable conv weights (None = one per phase).
        dc_lr_mult: learning-rate factor of the DC parameters (0.1, whole schedule).
        dc_op: deformable conv implementation, "gather" (ours) or "torchvision".
        conf_threshold, nms_iou, top_k: detection post-processing (0.01, 0.45, 200).
    """

    def __init__(
        self,
        *,
        input_size: int = 300,
        width: float = 1.0,
        groups: int = 4,
        input_channels: Sequence[int] | None = None,
        channel_fusion: bool = True,
        sa_base: bool = False,
        sa_fusion: bool = False,
        sa_groups: int = 1,
        sa_pool: int = 1,
        sa_spectral_norm: bool = True,
        dc: bool = False,
        dc_phase_wise_offsets: bool = True,
        dc_weight_groups: int | None = None,
        dc_lr_mult: float = 0.1,
        dc_op: str = "gather",
        conf_threshold: float = 0.01,
        nms_iou: float = 0.45,
        top_k: int = 200,
    ) -> None:
        super().__init__()
        if input_size < 64:
            raise ValueError(f"SSD input_size must be >= 64, got {input_size}")
        self.input_size = input_size
        self.input_channels = tuple(input_channels) if input_channels is not None else None
        if self.input_channels is not None:
            self.register_buffer(
                "_channel_index", torch.tensor(self.input_channels), persistent=False
            )
        in_ch = len(self.input_channels) if self.input_channels else IN_CHANNELS
        self.groups = groups
        self.dc_lr_mult = dc_lr_mult
        self.post = {"conf_threshold": conf_threshold, "nms_iou": nms_iou, "top_k": top_k}

        self.trunk = VGGTrunk(in_ch, groups=groups, width=width)
        sizes = self.trunk.feature_sizes(input_size)
        channels = [self.trunk.channels["conv4_3"], self.trunk.channels["fc7"]]
        feature_sizes = [sizes["conv4_3"], sizes["fc7"]]
        extras: list[nn.Module] = []
        ch, size = channels[-1], feature_sizes[-1]
        for reduce, out, stride in _EXTRAS:
            reduce = scaled_channels(reduce, width, groups)
            out = scaled_channels(out, width, groups)
            padding = 1 if stride == 2 or size < 3 else 0
            extra = nn.Sequential(
                conv_bn_relu(ch, reduce, 1, groups=groups),
                conv_bn_relu(reduce, out, 3, stride=stride, padding=padding, groups=groups),
            )
            size = spatial_size(extra, size)
            extras.append(extra)
            channels.append(out)
            feature_sizes.append(size)
            ch = out
        self.extras = nn.ModuleList(extras)
        self.source_channels, self.feature_sizes = channels, feature_sizes
        self.l2norm = L2Norm(channels[0])

        def sa_list() -> nn.ModuleList:
            return nn.ModuleList(
                SelfAttention(c, pool=sa_pool, groups=sa_groups, spectral_norm=sa_spectral_norm)
                for c in channels
            )

        self.sa_base = sa_list() if sa_base else None
        self.sa_fusion = sa_list() if sa_fusion else None
        self.dc = (
            DCModule(
                channels[0],
                channels[0] if self.sa_base is not None else 0,
                phases=groups,
                phase_wise_offsets=dc_phase_wise_offsets,
                weight_groups=dc_weight_groups,
                op=dc_op,
            )
            if dc
            else None
        )
        self.fusion = (
            nn.ModuleList(conv_bn_relu(c, c, 1) for c in channels) if channel_fusion else None
        )
        per_cell = list(zip(channels, priors_per_cell(), strict=True))
        self.loc = nn.ModuleList(nn.Conv2d(c, k * 4, 3, padding=1) for c, k in per_cell)
        self.conf = nn.ModuleList(nn.Conv2d(c, k * 2, 3, padding=1) for c, k in per_cell)
        for head in (*self.loc, *self.conf):
            nn.init.xavier_uniform_(head.weight)
            nn.init.zeros_(head.bias)
        self.register_buffer("priors", ssd_priors(feature_sizes, input_size), persistent=False)

    def _sa_base(self, i: int, x: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.sa_base is None:
            return x, None
        return self.sa_base[i](x, return_gated=True)

    def sources(self, images: Tensor) -> list[Tensor]:
        """The six source feature maps, after SA@base / DC / L2Norm (before SA@fusion)."""
        x = images if self.input_channels is None else images.index_select(1, self._channel_index)
        stages = self.trunk.stages
        for name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3"):
            x = stages[name](x)
        x, attention = self._sa_base(0, x)
        if self.dc is not None:
            x = self.dc(x, attention)
        out = [self.l2norm(x)]
        x = stages["fc7"](stages["conv5_3"](x))
        x, _ = self._sa_base(1, x)
        out.append(x)
        for i, extra in enumerate(self.extras, start=2):
            x, _ = self._sa_base(i, extra(x))
            out.append(x)
        return out

    def head_outputs(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``loc [B, P, 4]`` and ``conf [B, P, 2]`` in prior order."""
        expected = (IN_CHANNELS, self.input_size, self.input_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected images [B, {IN_CHANNELS}, {self.input_size}, {self.input_size}], "
                f"got {tuple(images.shape)}"
            )
        loc, conf = [], []
        for i, s in enumerate(self.sources(images)):
            if self.sa_fusion is not None:
                s = self.sa_fusion[i](s)
            if self.fusion is not None:
                s = self.fusion[i](s)
            loc.append(self.loc[i](s).permute(0, 2, 3, 1).flatten(1))
            conf.append(self.conf[i](s).permute(0, 2, 3, 1).flatten(1))
        b = images.shape[0]
        return torch.cat(loc, 1).view(b, -1, 4), torch.cat(conf, 1).view(b, -1, 2)

    def forward(
        self, images: Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        loc, conf = self.head_outputs(images)
        if self.training:
            if targets is None or len(targets) != images.shape[0]:
                raise ValueError("training needs one target dict per image")
            return multibox_loss(loc, conf, self.priors, targets, self.input_size)
        return detect(loc, conf, self.priors, self.input_size, **self.post)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """All parameters at ``lr`` except the DC module's at ``dc_lr_mult * lr``."""
        dc = {id(p) for p in self.dc.parameters()} if self.dc is not None else set()
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in dc]
        groups = [{"params": rest, "lr": lr}]
        if dc:
            groups.append(
                {"params": list(self.dc.parameters()), "lr": lr * self.dc_lr_mult, "name": "dc"}
            )
        return groups


_GSSD: dict[str, Any] = {"groups": 4, "channel_fusion": True}
_GSSD_PP: dict[str, Any] = {
    **_GSSD, "sa_base": True, "sa_fusion": True, "dc": True, "sa_pool": 1,
}


def _ssd(
    architecture: dict[str, Any],
    input_size: int,
    width: float,
    conf_threshold: float,
    nms_iou: float,
    top_k: int,
    dc_op: str,
) -> SSDDetector:
    return SSDDetector(
        input_size=input_size, width=width, conf_threshold=conf_threshold, nms_iou=nms_iou,
        top_k=top_k, dc_op=dc_op, **architecture,
    )


# Every SSD row takes the same settings; the row fixes the architecture. ``conf_threshold``,
# ``nms_iou`` and ``top_k`` decode boxes, ``dc_op`` picks an implementation of the same
# deformable convolution (``gather`` or ``torchvision``).


@register_model(
    "ssd",
    paper_row="SSD [23]",
    table="I",
    description="SSD300-VGG16, 12 channels as one stream",
)
def build_ssd(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """SSD [23]: SSD300-VGG16, 12 channels as one stream."""
    return _ssd(
        {"groups": 1, "channel_fusion": False},
        input_size, width, conf_threshold, nms_iou, top_k, dc_op
    )


@register_model(
    "gssd",
    paper_row="GSSD [15]",
    table="I",
    description="grouped SSD300 (4 phase groups) + 1x1 channel fusion",
)
def build_gssd(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD [15]: grouped SSD300 (4 phase groups) + 1x1 channel fusion."""
    return _ssd(_GSSD, input_size, width, conf_threshold, nms_iou, top_k, dc_op)


@register_model(
    "gssd_portal",
    paper_row="GSSD [15] (Portal Only)",
    table="I",
    description="GSSD fed the portal phase (channels 6:9) in all four phase groups",
)
def build_gssd_portal(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD [15] (Portal Only): GSSD fed the portal phase (channels 6:9) in all four phase
    groups."""
    return _ssd(
        {**_GSSD, "input_channels": PORTAL_IN_EVERY_PHASE},
        input_size, width, conf_threshold, nms_iou, top_k, dc_op
    )


@register_model(
    "gssd_pp",
    paper_row="GSSD++ (ours)",
    table="I",
    description="GSSD + SA@base + SA@fusion + DC at conv4_3",
)
def build_gssd_pp(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD++ (ours): GSSD + SA@base + SA@fusion + DC at conv4_3."""
    return _ssd(_GSSD_PP, input_size, width, conf_threshold, nms_iou, top_k, dc_op)


@register_model(
    "gssd_pp_no_phase_offsets",
    paper_row="GSSD++ w/o Phase-wise Offsets",
    table="III",
    description="GSSD++ with one offset group in the DC module",
)
def build_gssd_pp_no_phase_offsets(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD++ w/o Phase-wise Offsets: GSSD++ with one offset group in the DC module."""
    return _ssd(
        {**_GSSD_PP, "dc_phase_wise_offsets": False},
        input_size, width, conf_threshold, nms_iou, top_k, dc_op
    )


@register_model(
    "gssd_pp_no_dc",
    paper_row="GSSD++ w/o DC Module",
    table="III",
    description="GSSD++ without the DC module",
)
def build_gssd_pp_no_dc(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD++ w/o DC Module: GSSD++ without the DC module."""
    return _ssd({**_GSSD_PP, "dc": False}, input_size, width, conf_threshold, nms_iou, top_k, dc_op)


@register_model(
    "gssd_pp_no_sa_base",
    paper_row="GSSD++ w/o SA Modules@Base",
    table="III",
    description="GSSD++ without SA after the trunk sources (DC sees the feature alone)",
)
def build_gssd_pp_no_sa_base(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD++ w/o SA Modules@Base: GSSD++ without SA after the trunk sources (DC sees the feature
    alone)."""
    return _ssd(
        {**_GSSD_PP, "sa_base": False}, input_size, width, conf_threshold, nms_iou, top_k, dc_op
    )


@register_model(
    "gssd_pp_no_sa_fusion",
    paper_row="GSSD++ w/o SA Modules@Fusion",
    table="III",
    description="GSSD++ without SA before the 1x1 fusion",
)
def build_gssd_pp_no_sa_fusion(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD++ w/o SA Modules@Fusion: GSSD++ without SA before the 1x1 fusion."""
    return _ssd(
        {**_GSSD_PP, "sa_fusion": False}, input_size, width, conf_threshold, nms_iou, top_k, dc_op
    )


@register_model(
    "gssd_pp_no_interphase",
    paper_row="GSSD++ w/o Interphase Attention",
    table="III",
    description="GSSD++ with grouped (per-phase) SA modules",
)
def build_gssd_pp_no_interphase(
    input_size: int = 300,
    width: float = 1.0,
    conf_threshold: float = 0.01,
    nms_iou: float = 0.45,
    top_k: int = 200,
    dc_op: str = "gather",
) -> SSDDetector:
    """GSSD++ w/o Interphase Attention: GSSD++ with grouped (per-phase) SA modules."""
    return _ssd(
        {**_GSSD_PP, "sa_groups": 4}, input_size, width, conf_threshold, nms_iou, top_k, dc_op
    )
