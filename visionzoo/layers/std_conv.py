"""Weight-standardized convolution (Qiao et al., 2019), as used by BiT (Kolesnikov et al., 2020).

Each output filter is normalised to zero mean / unit variance before the convolution, which
makes GroupNorm-based nets train as well as BatchNorm ones with tiny per-device batches. The
stored weights are the raw (unstandardised) ones, so checkpoints keep the plain conv layout.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .padding import get_padding_value, pad_same

__all__ = ["StdConv2d", "standardize_weight"]


def standardize_weight(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-output-channel ``(w - mean) / sqrt(var + eps)`` with the biased variance."""
    flat = weight.reshape(weight.shape[0], -1)
    var, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) * torch.rsqrt(var + eps)).reshape_as(weight)


class StdConv2d(nn.Conv2d):
    """Conv2d on the standardised weight; ``padding`` may be an int, ``''`` or ``'same'`` (TF)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | str | None = None, dilation: int = 1, groups: int = 1, bias: bool = False,
                 eps: float = 1e-6) -> None:
        padding, self.dynamic_pad = get_padding_value("" if padding is None else padding, kernel_size,
                                                      stride=stride, dilation=dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        w = standardize_weight(self.weight, self.eps)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
