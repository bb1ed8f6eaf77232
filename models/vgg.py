"""VGG16 trunk with grouped convolutions (one group per phase), optional BatchNorm, width factor.

The trunk of GSSD [15] and PixelLink (authors' code): every conv is grouped, widths
64,64 | 128,128 | 256x3 | 512x3 | 512x3, pool3 in ceil mode (75 -> 38 at 300 px), pool5 3x3
stride 1, conv6 3x3 dilation 6 (-> 1024), conv7 1x1 (-> 1024). No ImageNet pretraining.
``groups=1`` gives the one-stream trunk of the plain SSD / PixelLink baselines.

Normalisation (the paper is silent; the authors' code decides): the SSD-family trunk has
BatchNorm + ReLU after every conv (their GSSD runs, ``--batch_norm`` on); their PixelLink trunk
has no BatchNorm at all, conv (with bias) + ReLU (``batch_norm=False`` here, :func:`conv_relu`).

Initialisation of the BatchNorm-free trunk is He (fan-in) with zero biases, which keeps the
activation scale through the 15 layers; the authors' code applies Xavier-uniform to it, which
with grouped convs (PyTorch counts the fan-out over all groups) shrinks the activations about
0.45x per layer, to ~1e-6 of the input scale at ``fc7``, so that the zero-initialised SA gates
at the deep sources get no gradient; that choice is not followed.

The trunk is a sequence of named stages so that detectors can insert modules between them
(GSSD++ puts SA and DC after ``conv4_3``)::

    trunk = VGGTrunk(in_channels=12, groups=4, width=0.25)
    feats = trunk(x)                      # {"conv1_2": ..., ..., "conv4_3": ..., "fc7": ...}
    for name, stage in trunk.stages.items():   # or run stage by stage
        x = stage(x)

Stage ``name`` ends with the layer of that name; each stage begins with the pooling that
precedes it. ``trunk.channels[name]`` is its output width and ``trunk.feature_sizes(s)`` the
spatial size of every stage output for an ``s x s`` input.
"""

from __future__ import annotations

import math

import torch.nn as nn
from torch import Tensor

STAGES = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3", "fc7")
_VGG16_WIDTHS = {
    "conv1_2": (64, 64),
    "conv2_2": (128, 128),
    "conv3_3": (256, 256, 256),
    "conv4_3": (512, 512, 512),
    "conv5_3": (512, 512, 512),
}
FC_WIDTH = 1024


def scaled_channels(channels: int, width: float, multiple: int = 1) -> int:
    """``channels * width`` rounded to a positive multiple of ``multiple`` (e.g. the groups)."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(multiple, int(round(channels * width / multiple)) * multiple)


def conv_bn_relu(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    padding: int | None = None,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """Conv (no bias, He init) + BatchNorm + ReLU; ``padding`` defaults to 'same'."""
    if padding is None:
        padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(
        in_ch,
        out_ch,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=False,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # no pretraining
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def conv_relu(
    in_ch: int,
    out_ch: int,
    kernel_size: int = 3,
    *,
    stride: int = 1,
    padding: int | None = None,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """Conv (with bias; He fan-in init, zero bias) + ReLU, no BatchNorm (PixelLink's trunk)."""
    if padding is None:
        padding = dilation * (kernel_size // 2)
    conv = nn.Conv2d(
        in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


def spatial_size(module: nn.Module, size: int) -> int:
    """Output side length of ``module`` (convs, pools and containers of them) for a square input.

    Used to derive prior/anchor grids from the network itself instead of hard-coding them.
    Modules that keep the size (BatchNorm, ReLU, ...) are passed through; containers are walked
    in registration order, which is their execution order for ``nn.Sequential``.
    """
    if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        k, s, p = (_pair0(module.kernel_size), _pair0(module.stride), _pair0(module.padding))
        d = _pair0(module.dilation) if isinstance(module, nn.Conv2d | nn.MaxPool2d) else 1
        span = (size + 2 * p - d * (k - 1) - 1) / s + 1
        ceil = getattr(module, "ceil_mode", False)
        out = math.ceil(span) if ceil else math.floor(span)
        if ceil and (out - 1) * s >= size + p:  # PyTorch drops a window starting in the padding
            out -= 1
        return out
    for child in module.children():
        size = spatial_size(child, size)
    return size


def _pair0(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


class VGGTrunk(nn.Module):
    """VGG16 trunk up to ``fc7`` with ``groups`` parallel streams (one per phase).

    Args:
        in_channels: input channels (12 = 4 phases x 3 slices, phase-major; 3 for one phase).
        groups: convolution groups in every layer (4 for GSSD/PixelLink-G, 1 for one stream).
            ``in_channels`` must be divisible by it so that group ``i`` sees phase ``i`` only.
        width: channel multiplier (1.0 = VGG16); widths are rounded to multiples of ``groups``.
        batch_norm: conv + BatchNorm + ReLU (True, SSD family) or conv + ReLU (False,
            PixelLink); see the module doc.
    """

    def __init__(
        self, in_channels: int = 12, groups: int = 4, width: float = 1.0, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        self.groups, self.batch_norm = groups, batch_norm
        block = conv_bn_relu if batch_norm else conv_relu
        self.channels: dict[str, int] = {}
        stages: dict[str, nn.Module] = {}
        ch = in_channels
        for i, name in enumerate(_VGG16_WIDTHS):
            layers: list[nn.Module] = []
            if i > 0:  # pool3 (before conv4) uses ceil mode: 75 -> 38 at 300 px
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=name == "conv4_3"))
            for out in _VGG16_WIDTHS[name]:
                out = scaled_channels(out, width, groups)
                layers.append(block(ch, out, groups=groups))
                ch = out
            stages[name] = nn.Sequential(*layers)
            self.channels[name] = ch
        fc = scaled_channels(FC_WIDTH, width, groups)
        stages["fc7"] = nn.Sequential(
            nn.MaxPool2d(3, 1, padding=1),
            block(ch, fc, 3, padding=6, dilation=6, groups=groups),  # conv6
            block(fc, fc, 1, groups=groups),  # conv7
        )
        self.channels["fc7"] = fc
        self.stages = nn.ModuleDict(stages)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """All stage outputs, keyed by :data:`STAGES`."""
        out = {}
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = x
        return out

    def feature_sizes(self, input_size: int) -> dict[str, int]:
        """Side length of every stage output for an ``input_size x input_size`` input."""
        sizes = {}
        for name, stage in self.stages.items():
            input_size = spatial_size(stage, input_size)
            sizes[name] = input_size
        return sizes
