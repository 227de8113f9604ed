"""ResNeSt (Zhang et al., 2020, "ResNeSt: Split-Attention Networks").

A ResNet-D whose bottleneck 3x3 conv is a split-attention conv (:class:`~visionzoo.layers.split_attn.SplitAttn`)
with ``radix`` splits per cardinal group. Strided blocks downsample with a 3x3 average pool
("avd") instead of a strided conv, placed before the split-attention conv (``avd_first``) or after it.

The network is our :class:`~visionzoo.models.resnet.ResNet` with this block, a deep stem
(``d``: 32 wide, ``e``: 64 wide) and average-pool shortcuts.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..layers.drop import DropPath
from ..layers.split_attn import SplitAttn
from .base import Variant, register_family
from .resnet import ResNet

__all__ = ["ResNestBottleneck", "VARIANTS"]


class ResNestBottleneck(nn.Module):
    """1x1 -> [avg-pool] -> split-attention 3x3 -> [avg-pool] -> 1x1 (x4), added to the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 cardinality: int = 1, base_width: int = 64, radix: int = 2, avd: bool = True,
                 avd_first: bool = False, is_first: bool = False, dilation: int = 1,
                 first_dilation: int | None = None, act_layer: Callable[..., nn.Module] = nn.ReLU,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 attn_layer: Callable[[int], nn.Module] | None = None, drop_path: float = 0.0, **_: Any) -> None:
        super().__init__()
        if radix < 1:
            raise ValueError("ResNestBottleneck needs radix >= 1")
        width = int(planes * (base_width / 64.0)) * cardinality
        first_dilation = first_dilation or dilation
        avd_stride = stride if avd and (stride > 1 or is_first) else 0
        if avd_stride:
            stride = 1

        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm_layer(width)
        self.act1 = act_layer(inplace=True)
        self.avd_first = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride and avd_first else None
        self.conv2 = SplitAttn(width, width, 3, stride=stride, padding=first_dilation, dilation=first_dilation,
                               groups=cardinality, radix=radix, act_layer=act_layer, norm_layer=norm_layer)
        self.avd_last = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride and not avd_first else None
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.se = attn_layer(planes * self.expansion) if attn_layer is not None else None
        self.act3 = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        out = self.act1(self.bn1(self.conv1(x)))
        if self.avd_first is not None:
            out = self.avd_first(out)
        out = self.conv2(out)
        if self.avd_last is not None:
            out = self.avd_last(out)
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        return self.act3(out + shortcut)


def _rn(layers: tuple[int, ...], stem_width: int = 32, radix: int = 2, avd_first: bool = False,
        **kwargs: Any) -> Variant:
    return Variant(ResNet, layers=layers, block=ResNestBottleneck, stem_type="deep", stem_width=stem_width,
                   avg_down=True, block_args=dict(radix=radix, avd=True, avd_first=avd_first), **kwargs)


VARIANTS: dict[str, Variant] = {
    "resnest14d": _rn((1, 1, 1, 1)),
    "resnest26d": _rn((2, 2, 2, 2)),
    "resnest50d": _rn((3, 4, 6, 3)),
    "resnest50d_1s4x24d": _rn((3, 4, 6, 3), radix=1, avd_first=True, cardinality=4, base_width=24),
    "resnest50d_4s2x40d": _rn((3, 4, 6, 3), radix=4, avd_first=True, cardinality=2, base_width=40),
    "resnest101e": _rn((3, 4, 23, 3), stem_width=64),
    "resnest200e": _rn((3, 24, 36, 3), stem_width=64),
    "resnest269e": _rn((3, 30, 48, 8), stem_width=64),
}

register_family("resnest", VARIANTS)
