"""Modulated deformable convolution (DCNv2) and the DC module of GSSD++ / PixelLink++.

:func:`modulated_deform_conv2d` computes exactly the operator of
``torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)``
(same offset/mask layout, same zero-outside bilinear sampling) but is built for speed on a GPU:

* the input is laid out channels-last as a table of ``[B * offset_groups * H * W, C/og]`` rows,
  so every bilinear corner of a (location, offset group, kernel tap) is one contiguous channel
  vector (coalesced row gathers instead of grid_sample's strided per-channel reads);
* corner weights, validity and the modulation mask are folded into one weight per corner;
  :class:`_BilinearGather` forms the sampled columns ``[B * L, og * K * C/og]`` corner by
  corner and saves only indices and weights for backward (it gathers again there) - nothing of
  the 4x corner tensor is kept; corner weights stay fp32 and the table gradient accumulates
  in fp32 with ``index_add_`` even when the features are bf16;
* the convolution itself is one (grouped) matmul that runs in bf16 under autocast.

The DC module (paper section IV-C, Fig. 2 right) concatenates the feature map with the SA
module's gated self-attention map ``a = sigma * Wo g`` (C channels, see
:mod:`models.attention`), interleaved per phase (``[x_1, a_1, x_2, a_2, ...]``) so offset group
``i`` sees phase ``i``'s feature and attention; a zero-initialised dense 3x3 conv predicts per
phase (offset group) 9 (dy, dx) offsets and 9 mask logits (sigmoid), and a modulated deformable
3x3 conv maps back to the feature width. At initialisation ``sigma = 0`` makes ``a`` zero and
the predictor's zero weights give zero offsets and mask 0.5 (as DCNv2): training starts from the
regular grid.

Where the paper is silent, the authors' code is followed:
* the attention input is ``sigma * Wo g`` with C channels (their ``Self_Attn`` output before
  the residual add, concatenated per phase with the feature), not ``g`` with C/2 channels: the
  paper names ``g`` the "gate map" but says the "gated self-attention map" is concatenated,
  without saying which; so the DC input has 2C channels;
* one DC layer, offset + mask predictor over all 2C channels, zero-initialised (their DCN class;
  their PixelLink model re-initialises every conv afterwards, the predictor included, which
  looks accidental and is not followed).

Where the paper is explicit and the code differs, the paper wins: the deformable conv's weights
are grouped per phase (``weight_groups = phases``), as Fig. 2 draws one dconv kernel per phase;
the code uses one dense conv (``weight_groups=1`` gives that variant).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d


def _bilinear_rows(
    offset: Tensor,
    batch: int,
    og: int,
    kernel: tuple[int, int],
    height: int,
    width: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Row indices ``[4, B, L, og, K]`` (corner-major) into the channels-last table, and weights."""
    kh, kw = kernel
    k = kh * kw
    ho, wo = offset.shape[-2:]
    dev, dt = offset.device, offset.dtype
    # offset layout (torchvision): channel g*2K + 2k is dy, +1 is dx
    off = offset.reshape(batch, og, k, 2, ho, wo).permute(0, 4, 5, 1, 2, 3)  # [B,Ho,Wo,og,K,2]
    ky, kx = torch.meshgrid(
        torch.arange(kh, device=dev, dtype=dt) * dilation[0],
        torch.arange(kw, device=dev, dtype=dt) * dilation[1],
        indexing="ij",
    )
    base_y = torch.arange(ho, device=dev, dtype=dt) * stride[0] - padding[0]
    base_x = torch.arange(wo, device=dev, dtype=dt) * stride[1] - padding[1]
    py = base_y.view(1, ho, 1, 1, 1) + ky.reshape(1, 1, 1, 1, k) + off[..., 0]
    px = base_x.view(1, 1, wo, 1, 1) + kx.reshape(1, 1, 1, 1, k) + off[..., 1]
    y0, x0 = py.detach().floor(), px.detach().floor()
    ly, lx = py - y0, px - x0
    y0, x0 = y0.long(), x0.long()
    if mask is not None:
        mod = mask.reshape(batch, og, k, ho, wo).permute(0, 3, 4, 1, 2)  # [B,Ho,Wo,og,K]
    group_base = (
        torch.arange(batch, device=dev).view(batch, 1, 1, 1, 1) * og
        + torch.arange(og, device=dev).view(1, 1, 1, og, 1)
    ) * (height * width)
    rows, weights = [], []
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        yy, xx = y0 + dy, x0 + dx
        valid = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        wy = ly if dy else 1 - ly
        wx = lx if dx else 1 - lx
        weight = wy * wx * valid
        if mask is not None:
            weight = weight * mod
        rows.append(group_base + yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1))
        weights.append(weight)
    shape = (4, batch, ho * wo, og, k)
    return torch.stack(rows).reshape(shape), torch.stack(weights).reshape(shape)


class _BilinearGather(torch.autograd.Function):
    """``out[..., :] = sum_j weights[j, ...] * table[rows[j, ...], :]`` (4 bilinear corners)."""

    @staticmethod
    def forward(ctx, table: Tensor, rows: Tensor, weights: Tensor) -> Tensor:
        """``weights`` may be wider than ``table`` (fp32 with a bf16 table): the output takes the
        table's dtype, gradients are accumulated at the weights' precision."""
        ctx.save_for_backward(table, rows, weights)
        low = weights.to(table.dtype)
        out = None
        for j in range(rows.shape[0]):
            term = F.embedding(rows[j], table) * low[j, ..., None]
            out = term if out is None else out.add_(term)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
        table, rows, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            acc_dtype = torch.promote_types(table.dtype, weights.dtype)
            acc = torch.zeros(table.shape, dtype=acc_dtype, device=table.device)
            flat = grad.reshape(-1, table.shape[1])
            for j in range(rows.shape[0]):  # bf16 grad x fp32 weight -> fp32 in one kernel
                src = flat * weights[j].reshape(-1, 1).to(acc_dtype)
                acc.index_add_(0, rows[j].reshape(-1), src)
            grad_table = acc.to(table.dtype)
        if ctx.needs_input_grad[2]:
            grad_weights = torch.stack(
                [
                    (F.embedding(rows[j], table) * grad).sum(-1, dtype=weights.dtype)
                    for j in range(rows.shape[0])
                ]
            )
        return grad_table, None, grad_weights


def modulated_deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable conv v2; same signature and result as ``torchvision.ops.deform_conv2d``.

    ``input [B, C, H, W]``, ``offset [B, 2*og*kh*kw, Ho, Wo]``, ``weight [O, C/groups, kh, kw]``
    (``groups`` inferred from the weight), ``mask [B, og*kh*kw, Ho, Wo]`` or None. ``og`` must
    be a multiple or a divisor of ``groups``.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    b, c, h, w = input.shape
    out_ch, c_per_group, kh, kw = weight.shape
    k = kh * kw
    groups = c // c_per_group
    og = offset.shape[1] // (2 * k)
    if c % og or offset.shape[1] != 2 * og * k or c_per_group * groups != c:
        raise ValueError(
            f"deformable conv shapes do not fit: input {tuple(input.shape)}, offset "
            f"{tuple(offset.shape)}, weight {tuple(weight.shape)}"
        )
    if og % groups and groups % og:
        raise ValueError(f"offset groups ({og}) and weight groups ({groups}) must nest")
    ho, wo = offset.shape[-2:]
    dtype = input.dtype
    if torch.is_autocast_enabled(input.device.type):
        dtype = torch.get_autocast_dtype(input.device.type)
    coord = torch.promote_types(offset.dtype, torch.float32)  # bf16 coordinates are too coarse
    rows, corner_w = _bilinear_rows(
        offset.to(coord),
        b,
        og,
        (kh, kw),
        h,
        w,
        stride,
        padding,
        dilation,
        None if mask is None else mask.to(coord),
    )
    cg = c // og
    table = input.to(dtype).reshape(b, og, cg, h * w).permute(0, 1, 3, 2).reshape(-1, cg)
    cols = _BilinearGather.apply(table, rows, corner_w)  # [B, L, og, K, cg]

    # arrange columns and weights as [groups, ..., K * channels-in-group]
    wt = weight.to(dtype).reshape(groups, out_ch // groups, c_per_group, k)
    if og % groups == 0:  # each weight group holds og/groups whole offset groups
        cols = cols.reshape(b * ho * wo, groups, -1)
        wt = wt.reshape(groups, out_ch // groups, og // groups, cg, k).transpose(-1, -2)
    else:  # each offset group is split into groups/og weight groups
        r = groups // og
        cols = cols.reshape(b * ho * wo, og, k, r, cg // r).transpose(2, 3)
        cols = cols.reshape(b * ho * wo, groups, -1)
        wt = wt.transpose(-1, -2)
    wt = wt.reshape(groups, out_ch // groups, -1)
    out = torch.bmm(cols.transpose(0, 1), wt.transpose(1, 2))  # [groups, B*L, O/groups]
    out = out.permute(1, 0, 2).reshape(b, ho, wo, out_ch).permute(0, 3, 1, 2)
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, -1, 1, 1)
    return out.contiguous()


class ModulatedDeformConv2d(nn.Module):
    """Layer form of :func:`modulated_deform_conv2d`: ``forward(x, offset, mask=None)``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation: as ``nn.Conv2d``
            (``padding`` defaults to 'same' for the stride-1 case).
        groups: weight groups (block-diagonal conv, as ``nn.Conv2d(groups=...)``).
        offset_groups: sampling-offset groups; the expected ``offset`` has
            ``2 * offset_groups * kh * kw`` channels, ``mask`` ``offset_groups * kh * kw``.
        op: ``"gather"`` (:func:`modulated_deform_conv2d`, default) or ``"torchvision"``
            (``torchvision.ops.deform_conv2d``, same result; for comparison or fallback).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        op: str = "gather",
    ) -> None:
        super().__init__()
        if op not in _OPS:
            raise ValueError(f"deformable conv op must be one of {sorted(_OPS)}, got {op!r}")
        self.op = op
        if in_channels % groups or out_channels % groups or in_channels % offset_groups:
            raise ValueError(
                f"channels {in_channels}->{out_channels} do not divide by groups={groups} / "
                f"offset_groups={offset_groups}"
            )
        self.stride, self.dilation = stride, dilation
        self.padding = dilation * (kernel_size // 2) if padding is None else padding
        self.offset_groups = offset_groups
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return _OPS[self.op](
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )


_OPS = {"gather": modulated_deform_conv2d, "torchvision": deform_conv2d}


def interleave_phases(feature: Tensor, attention: Tensor, phases: int) -> Tensor:
    """``[x_1, a_1, ..., x_P, a_P]``: both maps split into ``phases`` channel chunks."""
    b, _, h, w = feature.shape
    x = feature.reshape(b, phases, -1, h, w)
    a = attention.reshape(b, phases, -1, h, w)
    return torch.cat([x, a], dim=2).reshape(b, -1, h, w)


class DCModule(nn.Module):
    """Attention-guided multiphase alignment: predict per-phase offsets, deform, convolve.

    Args:
        channels: feature channels C (also the output width).
        attention_channels: channels of the gated SA map concatenated to the feature (C in
            GSSD++ / PixelLink++; 0 when there is no SA in front, e.g. the "w/o SA
            Modules@Base" ablation).
        phases: number of phase chunks (4); both maps are interleaved per phase.
        phase_wise_offsets: one offset group per phase (True, GSSD++) or one shared offset
            field ("w/o Phase-wise Offsets", Table III).
        weight_groups: groups of the deformable conv weights (default ``phases``; see module doc).
        op: deformable conv implementation, see :class:`ModulatedDeformConv2d`.

    ``forward(x, attention=None)`` returns the aligned feature ``[B, C, H, W]``; the offsets and
    mask of the last call are kept in ``last_offset`` / ``last_mask`` (detached) for inspection.
    """

    def __init__(
        self,
        channels: int,
        attention_channels: int = 0,
        *,
        phases: int = 4,
        phase_wise_offsets: bool = True,
        weight_groups: int | None = None,
        kernel_size: int = 3,
        op: str = "gather",
    ) -> None:
        super().__init__()
        if channels % phases or attention_channels % phases:
            raise ValueError(
                f"DC channels {channels}/{attention_channels} not divisible by {phases}"
            )
        self.phases, self.attention_channels = phases, attention_channels
        self.offset_groups = phases if phase_wise_offsets else 1
        in_ch = channels + attention_channels
        k = kernel_size * kernel_size
        self.offset_predictor = nn.Conv2d(
            in_ch, 3 * self.offset_groups * k, kernel_size, padding=kernel_size // 2
        )
        nn.init.zeros_(self.offset_predictor.weight)
        nn.init.zeros_(self.offset_predictor.bias)
        self.dconv = ModulatedDeformConv2d(
            in_ch,
            channels,
            kernel_size,
            groups=phases if weight_groups is None else weight_groups,
            offset_groups=self.offset_groups,
            op=op,
        )
        self.last_offset: Tensor | None = None
        self.last_mask: Tensor | None = None

    def forward(self, x: Tensor, attention: Tensor | None = None) -> Tensor:
        if self.attention_channels:
            if attention is None or attention.shape[1] != self.attention_channels:
                raise ValueError(
                    f"DC module expects a gated SA map with {self.attention_channels} channels"
                )
            x = interleave_phases(x, attention, self.phases)
        pred = self.offset_predictor(x)
        n_off = 2 * self.offset_groups * self.dconv.kernel_size**2
        offset, mask = pred[:, :n_off], torch.sigmoid(pred[:, n_off:])
        self.last_offset, self.last_mask = offset.detach(), mask.detach()
        return self.dconv(x, offset, mask)
