"""Split attention (Zhang et al., 2020, "ResNeSt: Split-Attention Networks").

A grouped conv produces ``radix`` candidate maps per cardinal group; their sum is globally pooled,
passed through a small two-layer bottleneck (grouped by cardinality) and turned into per-channel
weights by a softmax across the ``radix`` candidates (a sigmoid when ``radix == 1``). The output is
the weighted sum of the candidates: a channel-wise attention over feature-map splits.
Keys: ``conv``, ``bn0``, ``fc1``, ``bn1``, ``fc2``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import LayerType, create_act_layer
from .helpers import make_divisible
from .norm import get_norm_layer

__all__ = ["SplitAttn", "RadixSoftmax"]


class RadixSoftmax(nn.Module):
    """Softmax over the ``radix`` axis of ``[B, cardinality * radix * C, 1, 1]`` logits laid out
    cardinal-group major; returns them radix-major (``[B, radix * cardinality * C]``) to match the
    conv's split layout. ``radix == 1`` is a sigmoid gate."""

    def __init__(self, radix: int, cardinality: int) -> None:
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.radix > 1:
            x = x.reshape(b, self.cardinality, self.radix, -1).transpose(1, 2)
            return F.softmax(x, dim=1).reshape(b, -1)
        return torch.sigmoid(x)


class SplitAttn(nn.Module):
    """Split-attention conv: ``k x k`` conv to ``radix`` splits, attention-weighted sum of the splits."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        radix: int = 2,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        act_layer: LayerType = nn.ReLU,
        norm_layer: LayerType = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.radix = radix
        mid = out_channels * radix
        attn_chs = rd_channels or make_divisible(in_channels * radix * rd_ratio, rd_divisor, min_value=32)
        padding = kernel_size // 2 * dilation if padding is None else padding
        norm = get_norm_layer(norm_layer)

        self.conv = nn.Conv2d(in_channels, mid, kernel_size, stride=stride, padding=padding, dilation=dilation,
                              groups=groups * radix, bias=bias)
        self.bn0 = norm(mid) if norm is not None else nn.Identity()
        self.act0 = create_act_layer(act_layer, inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn_chs, 1, groups=groups)
        self.bn1 = norm(attn_chs) if norm is not None else nn.Identity()
        self.act1 = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(attn_chs, mid, 1, groups=groups)
        self.rsoftmax = RadixSoftmax(radix, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.conv(x)))
        b, rc, h, w = x.shape
        if self.radix > 1:
            x = x.reshape(b, self.radix, rc // self.radix, h, w)
            gap = x.sum(dim=1)
        else:
            gap = x
        gap = self.act1(self.bn1(self.fc1(gap.mean((2, 3), keepdim=True))))
        attn = self.rsoftmax(self.fc2(gap))
        if self.radix > 1:
            return (x * attn.reshape(b, self.radix, rc // self.radix, 1, 1)).sum(dim=1)
        return x * attn.reshape(b, rc, 1, 1)
