"""Conditionally parameterised convolution (Yang et al., 2019, "CondConv: Conditionally
Parameterized Convolutions for Efficient Inference", https://arxiv.org/abs/1904.04971).

The kernel is a per-sample mixture of ``num_experts`` kernels, weighted by routing weights the
caller computes (e.g. ``sigmoid(linear(avgpool(x)))``). Capacity grows with the number of experts
while the cost stays that of one conv. The expert kernels are stored flattened as
``weight[num_experts, out * in/groups * kh * kw]`` (the published checkpoint layout); the batch is
run as one grouped conv with one group per sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import to_2tuple
from .padding import pad_to_same, resolve_padding

__all__ = ["CondConv2d"]


class CondConv2d(nn.Module):
    """``forward(x, routing_weights[B, num_experts])``: a conv whose kernel is mixed per sample."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: str | int = "", dilation: int = 1, groups: int = 1, bias: bool = False,
                 num_experts: int = 4) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = to_2tuple(kernel_size)
        self.stride = to_2tuple(stride)
        pad, self.dynamic_pad = resolve_padding(padding, kernel_size, stride=stride, dilation=dilation)
        self.padding = to_2tuple(pad)
        self.dilation = to_2tuple(dilation)
        self.groups = groups
        self.num_experts = num_experts
        self.weight_shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, math.prod(self.weight_shape)))
        self.bias = nn.Parameter(torch.empty(num_experts, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = math.prod(self.weight_shape[1:])
        bound = 1.0 / math.sqrt(fan_in)
        # each expert initialised like an ordinary conv kernel
        nn.init.uniform_(self.weight, -bound * math.sqrt(3), bound * math.sqrt(3))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weight = (routing_weights @ self.weight).view((b * self.out_channels,) + self.weight_shape[1:])
        bias = (routing_weights @ self.bias).view(-1) if self.bias is not None else None
        x = x.reshape(1, b * c, h, w)
        if self.dynamic_pad:
            x = pad_to_same(x, self.kernel_size, self.stride, self.dilation)
        out = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups * b)
        return out.view(b, self.out_channels, out.shape[-2], out.shape[-1])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"num_experts={self.num_experts}, groups={self.groups}")
