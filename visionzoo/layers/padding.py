"""Convolution padding: symmetric, and TF "SAME" (static when the size is known, dynamic otherwise).

TF-trained weights (``tf_`` EfficientNets, BiT) expect TF's asymmetric "SAME" padding; with the
wrong padding outputs shift by a pixel and accuracy drops, so these layers matter for fidelity.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import is_exportable, is_scriptable
from .helpers import to_2tuple

__all__ = ["get_padding", "get_same_padding", "pad_same", "is_static_pad", "get_padding_value",
           "Conv2dSame", "create_conv2d_pad", "MaxPool2dSame", "create_pool2d"]


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding that keeps ``out = ceil(in / stride)`` for odd kernels."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def get_same_padding(x: int, kernel_size: int, stride: int, dilation: int) -> int:
    return max((math.ceil(x / stride) - 1) * stride + (kernel_size - 1) * dilation + 1 - x, 0)


def is_static_pad(kernel_size: int, stride: int = 1, dilation: int = 1) -> bool:
    """TF SAME equals symmetric padding when stride is 1 and the kernel is odd."""
    return stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0


def pad_same(x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int] = (1, 1), value: float = 0.0) -> torch.Tensor:
    ih, iw = x.shape[-2:]
    pad_h = get_same_padding(ih, kernel_size[0], stride[0], dilation[0])
    pad_w = get_same_padding(iw, kernel_size[1], stride[1], dilation[1])
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], value=value)
    return x


def get_padding_value(padding, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int | str, bool]:
    """Turn a padding spec (int, ``''``, ``'same'``, ``'valid'``) into (padding, needs_dynamic_pad)."""
    dynamic = False
    if isinstance(padding, str):
        padding = padding.lower()
        if padding == "same":
            if is_static_pad(kernel_size, stride=stride, dilation=dilation):
                padding = get_padding(kernel_size, stride=stride, dilation=dilation)
            else:
                padding, dynamic = 0, True
        elif padding == "valid":
            padding = 0
        else:
            padding = get_padding(kernel_size, stride=stride, dilation=dilation)
    return padding, dynamic


class Conv2dSame(nn.Conv2d):
    """Conv2d with TF "SAME" padding computed from the input size at run time."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def create_conv2d_pad(in_chs: int, out_chs: int, kernel_size: int, **kwargs) -> nn.Conv2d:
    """A Conv2d whose ``padding`` may be ``''`` (symmetric), ``'same'`` (TF) or ``'valid'``."""
    padding = kwargs.pop("padding", "")
    kwargs.setdefault("bias", False)
    stride = kwargs.get("stride", 1)
    dilation = kwargs.get("dilation", 1)
    padding, dynamic = get_padding_value(padding, kernel_size, stride=stride, dilation=dilation)
    if dynamic:
        return Conv2dSame(in_chs, out_chs, kernel_size, **kwargs)
    return nn.Conv2d(in_chs, out_chs, kernel_size, padding=padding, **kwargs)


class MaxPool2dSame(nn.MaxPool2d):
    """MaxPool2d with TF "SAME" padding (pads with -inf)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> None:
        kernel_size, stride, dilation = to_2tuple(kernel_size), to_2tuple(stride or kernel_size), to_2tuple(dilation)
        super().__init__(kernel_size, stride, (0, 0), dilation, ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, value=-float("inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, (0, 0), self.dilation, self.ceil_mode)


def create_pool2d(pool_type: str, kernel_size: int, stride: int | None = None, **kwargs) -> nn.Module:
    stride = stride or kernel_size
    padding = kwargs.pop("padding", "")
    padding, dynamic = get_padding_value(padding, kernel_size, stride=stride, **kwargs)
    if dynamic:
        if pool_type == "avg":
            raise ValueError("TF SAME average pooling is not supported")
        return MaxPool2dSame(kernel_size, stride=stride, **kwargs)
    if pool_type == "avg":
        return nn.AvgPool2d(kernel_size, stride=stride, padding=padding, **kwargs)
    if pool_type == "max":
        return nn.MaxPool2d(kernel_size, stride=stride, padding=padding, **kwargs)
    raise ValueError(f"unknown pool type {pool_type!r}; use 'avg' or 'max'")
