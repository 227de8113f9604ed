"""Mixed depthwise convolution (Tan & Le, 2019, "MixConv: Mixed Depthwise Convolutional Kernels",
https://arxiv.org/abs/1907.09595).

The channels are split into groups and each group gets its own kernel size, so one layer sees
several receptive fields at the cost of a single depthwise conv. With one kernel per group of
``1x1`` convs it is also the "grouped pointwise" conv of MixNet. Children are named ``0, 1, ...``
(the layout of the published MixNet checkpoints).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .padding import create_conv2d_pad

__all__ = ["MixedConv2d", "split_channels"]


def split_channels(channels: int, num_splits: int) -> list[int]:
    """Equal splits; the remainder goes to the first split (so the first kernel is never short)."""
    splits = [channels // num_splits] * num_splits
    splits[0] += channels - sum(splits)
    return splits


class MixedConv2d(nn.ModuleDict):
    """One conv per kernel size over its slice of the channels, outputs concatenated."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int], stride: int = 1,
                 padding: str | int = "", dilation: int = 1, depthwise: bool = False, bias: bool = False) -> None:
        super().__init__()
        kernels = list(kernel_size)
        in_splits = split_channels(in_channels, len(kernels))
        out_splits = split_channels(out_channels, len(kernels))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_splits = in_splits
        for i, (k, cin, cout) in enumerate(zip(kernels, in_splits, out_splits)):
            self.add_module(str(i), create_conv2d_pad(
                cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                groups=cout if depthwise else 1, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.in_splits, dim=1)
        outs: list[torch.Tensor] = []
        for i, conv in enumerate(self.values()):  # (TorchScript cannot zip a list with modules)
            outs.append(conv(parts[i]))
        return torch.cat(outs, dim=1)
