"""Self-attention (SA) module of GSSD++ / PixelLink++ (paper section IV-B, eqs. 1-3).

``q = Wq x``, ``k = Wk x`` (C/8 channels), ``v = Wv x`` (C/2 channels), all 1x1 convs;
``beta = softmax(q^T k)`` over key locations (no 1/sqrt(d) scaling); gate map ``g = v beta^T``
(C/2 x N); output ``y = x + sigma * Wo g`` with the scalar ``sigma`` initialised to 0, so the
module starts as the identity.

The map handed to the DC module (``return_gated=True``) is the residual branch ``sigma * Wo g``
(C channels), the paper's "gated self-attention map" (section IV-C), zero at initialisation.
The paper calls ``g`` (C/2 channels) the "gate map" and does not say which of the two the DC
module reads; the authors' code (their ``Self_Attn`` returns ``sigma * attn_g`` after the output
conv, concatenated per phase before the DCN) settles it, so that is what is returned here.

Spatial bottleneck: keys and values are average-pooled by ``pool`` (= D; 1 for GSSD++, 2 for
PixelLink++), queries keep full resolution, so ``beta`` is N x N/D^2 and the gate map keeps the
input resolution. (The paper's text says the pooling is applied to the query, but its
dimensions - beta in R^{N x N/D^2} and g at full resolution - and the authors' code pool the
keys; that is what is done here.) Pooled size: ``floor(H/D) x floor(W/D)`` (at least 1) by
adaptive average pooling, as the authors' code: for odd sizes (e.g. PixelLink++'s 75 x 75
``conv3_3`` map -> 37 x 37) its 2- or 3-pixel windows cover the map without a partial window.

``groups > 1`` is the "w/o Interphase Attention" ablation (Table III): the four 1x1 convs are
grouped and attention is computed per group (one head per phase, each phase attends with its own
queries/keys to its own values), so no information passes between phases.

Spectral normalisation: the authors' code wraps the four 1x1 convs in spectral norm (as in
SAGAN); the paper does not mention it. It is on by default (``spectral_norm=True``) because the
paper does not contradict the code and it bounds the attention logits; pass ``False`` to drop it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


def _bottleneck(channels: int, divisor: int, groups: int) -> int:
    """``channels // divisor`` rounded down to a positive multiple of ``groups``."""
    return max(groups, channels // divisor // groups * groups)


class SelfAttention(nn.Module):
    """SAGAN-style self-attention with a residual gate ``sigma`` (init 0).

    Args:
        channels: C, input and output channels.
        pool: D, average-pooling factor applied to keys and values (1 = none).
        groups: 1 = attention across all phases (GSSD++); 4 = per-phase attention
            ("w/o Interphase Attention"). ``channels`` must be divisible by ``groups``.
        spectral_norm: wrap the 1x1 convs in spectral norm (authors' code; see module doc).

    ``forward(x, return_gated=False)`` returns ``y`` or ``(y, a)`` with ``a = sigma * Wo g``
    ``[B, C, H, W]`` (so ``y = x + a``), the gated map the DC module concatenates with the feature.
    """

    def __init__(
        self, channels: int, pool: int = 1, groups: int = 1, spectral_norm: bool = True
    ) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"SA channels={channels} not divisible by groups={groups}")
        if pool < 1:
            raise ValueError(f"SA pool must be >= 1, got {pool}")
        self.channels, self.pool, self.groups = channels, pool, groups
        self.qk_channels = _bottleneck(channels, 8, groups)
        self.gate_channels = _bottleneck(channels, 2, groups)

        def conv(cin: int, cout: int) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 1, groups=groups)
            # on the 'meta' device (shape/parameter inspection, e.g. `models list`) spectral
            # norm is skipped: it adds no parameters and its power-iteration init needs values
            if spectral_norm and not layer.weight.is_meta:
                layer = _spectral_norm(layer)
            return layer

        self.query = conv(channels, self.qk_channels)
        self.key = conv(channels, self.qk_channels)
        self.value = conv(channels, self.gate_channels)
        self.out = conv(self.gate_channels, channels)
        self.sigma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, return_gated: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        b, _, h, w = x.shape
        g = self.groups
        q = self.query(x)
        pooled = (max(1, h // self.pool), max(1, w // self.pool))
        kv = F.adaptive_avg_pool2d(x, pooled) if self.pool > 1 else x
        k, v = self.key(kv), self.value(kv)
        # [B, groups, locations, channels-per-group]: one attention head per group
        q, k, v = (t.reshape(b, g, t.shape[1] // g, -1).transpose(-1, -2) for t in (q, k, v))
        gate = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        gate = gate.transpose(-1, -2).reshape(b, self.gate_channels, h, w)
        gated = self.sigma * self.out(gate)
        y = x + gated
        return (y, gated) if return_gated else y
