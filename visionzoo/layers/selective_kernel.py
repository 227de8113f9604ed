"""Selective kernel convolution (Li et al., 2019, "Selective Kernel Networks").

The input goes through several conv paths with different receptive fields (3x3 convs with growing
dilation stand in for 3x3, 5x5, ... kernels); the summed, globally pooled result is squeezed by a
1x1 conv and expanded to one logit per path and channel; a softmax across paths weights each
path's map per channel, and the weighted maps are summed. ``split_input`` feeds each path its own
slice of the input channels instead of all of them.
Keys: ``paths.<i>.conv``/``.bn`` and ``attn.fc_reduce``, ``attn.bn``, ``attn.fc_select``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .activations import LayerType, create_act_layer
from .conv_norm_act import ConvNormAct
from .helpers import make_divisible
from .norm import get_norm_layer

__all__ = ["SelectiveKernel", "SelectiveKernelAttn"]


class SelectiveKernelAttn(nn.Module):
    """Per-channel softmax weights over ``num_paths`` stacked maps ``[B, paths, C, H, W]``."""

    def __init__(self, channels: int, num_paths: int = 2, attn_channels: int = 32,
                 act_layer: LayerType = nn.ReLU, norm_layer: LayerType = nn.BatchNorm2d) -> None:
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, 1, bias=False)
        self.bn = get_norm_layer(norm_layer)(attn_channels)
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.sum(1).mean((2, 3), keepdim=True)
        s = self.fc_select(self.act(self.bn(self.fc_reduce(s))))
        b, c = s.shape[:2]
        return torch.softmax(s.reshape(b, self.num_paths, c // self.num_paths, 1, 1), dim=1)


def _path_dilations(kernel_size: Sequence[int], dilation: int, keep_3x3: bool) -> tuple[list[int], list[int]]:
    """(kernel sizes, dilations) of the paths; with ``keep_3x3`` a k x k kernel becomes a dilated 3x3."""
    dilations = [dilation * (k - 1) // 2 for k in kernel_size] if keep_3x3 else [dilation] * len(kernel_size)
    kernels = [3] * len(kernel_size) if keep_3x3 else list(kernel_size)
    return kernels, dilations


class SelectiveKernel(nn.Module):
    """Selective-kernel conv: parallel conv-norm-act paths fused by :class:`SelectiveKernelAttn`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        kernel_size: Sequence[int] | int | None = None,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        rd_ratio: float = 1.0 / 16,
        rd_divisor: int = 8,
        rd_channels: int | None = None,
        keep_3x3: bool = True,
        split_input: bool = True,
        act_layer: LayerType = nn.ReLU,
        norm_layer: LayerType = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        kernel_size = kernel_size or [3, 5]
        if isinstance(kernel_size, int):  # one size: two paths of it, the second dilated
            kernel_size = [kernel_size] * 2
        kernels, dilations = _path_dilations(kernel_size, dilation, keep_3x3)
        self.num_paths = len(kernels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.split_input = split_input
        path_in = in_channels // self.num_paths if split_input else in_channels
        groups = min(out_channels, groups)
        self.paths = nn.ModuleList(
            ConvNormAct(path_in, out_channels, k, stride=stride, padding=d * (k - 1) // 2, dilation=d, groups=groups,
                        act_layer=act_layer, norm_layer=norm_layer)
            for k, d in zip(kernels, dilations))
        attn_channels = rd_channels or make_divisible(out_channels * rd_ratio, rd_divisor)
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels, act_layer, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split_input:
            xs = torch.split(x, self.in_channels // self.num_paths, 1)
            maps = [path(xs[i]) for i, path in enumerate(self.paths)]
        else:
            maps = [path(x) for path in self.paths]
        stacked = torch.stack(maps, dim=1)
        return (stacked * self.attn(stacked)).sum(dim=1)
