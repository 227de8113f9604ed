"""Convolution padding: symmetric, and TensorFlow's "SAME".

TF-trained weights (``tf_`` EfficientNets, BiT, ...) were trained with "SAME" padding, which pads
so that ``out = ceil(in / stride)`` and puts the odd pixel at the end. For a stride-1 odd kernel
that is ordinary symmetric padding; otherwise it depends on the input size and is applied at run
time. Getting it wrong shifts every output by a pixel and costs accuracy, so it lives here once.
"""
from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import to_2tuple

__all__ = ["get_padding", "pad_to_same", "resolve_padding", "Conv2dSame",
           "create_conv2d_pad", "MaxPool2dSame"]

PaddingSpec = Union[int, str, None]


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding for an odd kernel: half the dilated kernel's reach, plus ``(stride-1)/2``."""
    reach = dilation * (kernel_size - 1)
    return (reach + stride - 1) // 2


def _same_total(n: int, kernel_size: int, stride: int, dilation: int) -> int:
    """Pixels TF "SAME" adds along one axis of length ``n``: enough for ``ceil(n / stride)`` windows."""
    covered = (math.ceil(n / stride) - 1) * stride + dilation * (kernel_size - 1) + 1
    return max(covered - n, 0)


def pad_to_same(x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int] = (1, 1), value: float = 0.0) -> torch.Tensor:
    """Pad an NCHW tensor for a TF "SAME" window, the odd pixel after (``value``: -inf for max pools)."""
    rows = _same_total(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    cols = _same_total(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    if rows == 0 and cols == 0:
        return x
    return F.pad(x, [cols // 2, cols - cols // 2, rows // 2, rows - rows // 2], value=value)


def resolve_padding(padding: PaddingSpec, kernel_size: int, stride: int = 1,
                    dilation: int = 1) -> tuple[int, bool]:
    """``(static padding, pad dynamically?)`` for a spec: an int, ``''``/``None`` (symmetric),
    ``'valid'`` (none) or ``'same'`` (TF: static when it is symmetric anyway, else dynamic)."""
    if not isinstance(padding, str) and padding is not None:
        return padding, False
    spec = (padding or "").lower()
    if spec == "valid":
        return 0, False
    if spec == "same" and (stride > 1 or dilation * (kernel_size - 1) % 2):
        return 0, True
    return get_padding(kernel_size, stride, dilation), False


class Conv2dSame(nn.Conv2d):
    """Conv2d with TF "SAME" padding worked out from each input's size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(pad_to_same(x, self.kernel_size, self.stride, self.dilation), self.weight, self.bias)


def create_conv2d_pad(in_chs: int, out_chs: int, kernel_size: int, **kwargs) -> nn.Conv2d:
    """A bias-free (unless asked) Conv2d whose ``padding`` may also be ``''``, ``'same'`` or ``'valid'``."""
    kwargs.setdefault("bias", False)
    amount, dynamic = resolve_padding(kwargs.pop("padding", ""), kernel_size, kwargs.get("stride", 1),
                                      kwargs.get("dilation", 1))
    if dynamic:
        return Conv2dSame(in_chs, out_chs, kernel_size, **kwargs)
    return nn.Conv2d(in_chs, out_chs, kernel_size, padding=amount, **kwargs)


class MaxPool2dSame(nn.MaxPool2d):
    """MaxPool2d with TF "SAME" padding; pads with -inf so padding never wins the max."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> None:
        super().__init__(to_2tuple(kernel_size), to_2tuple(stride or kernel_size), (0, 0), to_2tuple(dilation),
                         ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_same(x, self.kernel_size, self.stride, self.dilation, value=-math.inf)
        return F.max_pool2d(x, self.kernel_size, self.stride, (0, 0), self.dilation, self.ceil_mode)
