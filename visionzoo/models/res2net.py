"""Res2Net (Gao et al., 2019, "Res2Net: A New Multi-scale Backbone Architecture").

A Res2Net bottleneck replaces the 3x3 conv of a ResNet bottleneck by ``scale`` groups of channels
processed hierarchically: after the 1x1 reduction to ``width * scale`` channels, chunk 0 goes through
a 3x3 conv, chunk ``i`` is added to the previous chunk's output before its own 3x3 conv, and the last
chunk is passed through untouched. The outputs are concatenated and expanded by the 1x1 conv, so one
block sees receptive fields of several sizes. In the first block of a stage (stride or projection
shortcut) the chunks are not chained and the untouched chunk is average-pooled to the new stride.

The network is our :class:`~visionzoo.models.resnet.ResNet` with this block (``res2net50d``: ResNet-D
deep stem and average-pool shortcuts).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..layers.drop import DropPath
from .base import Variant, register_family
from .resnet import ResNet

__all__ = ["Bottle2neck", "VARIANTS"]


class Bottle2neck(nn.Module):
    """1x1 -> ``scale - 1`` chained 3x3 convs over channel chunks (+ one passed-through chunk) -> 1x1."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 cardinality: int = 1, base_width: int = 26, scale: int = 4, dilation: int = 1,
                 first_dilation: int | None = None, act_layer: Callable[..., nn.Module] = nn.ReLU,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 attn_layer: Callable[[int], nn.Module] | None = None, drop_path: float = 0.0, **_: Any) -> None:
        super().__init__()
        self.scale = scale
        self.is_first = stride > 1 or downsample is not None
        self.width = width = int(planes * (base_width / 64.0)) * cardinality
        outplanes = planes * self.expansion
        first_dilation = first_dilation or dilation

        self.conv1 = nn.Conv2d(inplanes, width * scale, 1, bias=False)
        self.bn1 = norm_layer(width * scale)
        n = max(1, scale - 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=stride, padding=first_dilation, dilation=first_dilation,
                      groups=cardinality, bias=False) for _ in range(n))
        self.bns = nn.ModuleList(norm_layer(width) for _ in range(n))
        # the passed-through chunk of a stage's first block is pooled to the block's stride
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if self.is_first and scale > 1 else None
        self.conv3 = nn.Conv2d(width * scale, outplanes, 1, bias=False)
        self.bn3 = norm_layer(outplanes)
        self.se = attn_layer(outplanes) if attn_layer is not None else None
        self.relu = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        chunks = torch.split(out, self.width, 1)
        outs: list[torch.Tensor] = []
        sp = chunks[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = chunks[i] if i == 0 or self.is_first else sp + chunks[i]
            sp = self.relu(bn(conv(sp)))
            outs.append(sp)
        if self.scale > 1:
            outs.append(self.pool(chunks[-1]) if self.pool is not None else chunks[-1])
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        if self.se is not None:
            out = self.se(out)
        out = self.drop_path(out)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        return self.relu(out + shortcut)


def _r2(layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 26, scale: int = 4, **kwargs: Any) -> Variant:
    return Variant(ResNet, layers=layers, block=Bottle2neck, base_width=width, block_args=dict(scale=scale),
                   **kwargs)


_D = dict(stem_type="deep", stem_width=32, avg_down=True)
VARIANTS: dict[str, Variant] = {
    "res2net50_14w_8s": _r2(width=14, scale=8),
    "res2net50_26w_4s": _r2(),
    "res2net50_26w_6s": _r2(scale=6),
    "res2net50_26w_8s": _r2(scale=8),
    "res2net50_48w_2s": _r2(width=48, scale=2),
    "res2net50d": _r2(**_D),
    "res2net101_26w_4s": _r2((3, 4, 23, 3)),
    "res2net101d": _r2((3, 4, 23, 3), **_D),
    "res2next50": _r2(width=4, cardinality=8),
}

register_family("res2net", VARIANTS)
