"""Weight-standardized convolution (Qiao et al., 2019), as used by BiT (Kolesnikov et al., 2020).

Each output filter is normalised to zero mean / unit variance before the convolution, which
makes GroupNorm-based nets train as well as BatchNorm ones with tiny per-device batches. The
stored weights are the raw (unstandardised) ones, so checkpoints keep the plain conv layout.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .padding import pad_to_same, resolve_padding

__all__ = ["StdConv2d", "ScaledStdConv2d", "standardize_weight"]


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
        padding, self.dynamic_pad = resolve_padding("" if padding is None else padding, kernel_size,
                                                      stride=stride, dilation=dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            x = pad_to_same(x, self.kernel_size, self.stride, self.dilation)
        w = standardize_weight(self.weight, self.eps)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledStdConv2d(nn.Conv2d):
    """Scaled weight standardisation (Brock et al., 2021, NF-ResNets / NFNets).

    The filter is standardised per output channel, then multiplied by ``gamma / sqrt(fan_in)``
    (``gamma``: the activation's variance-restoring constant, 1 when the activation already
    carries it) and by a learnable per-channel ``gain``: ``W' = gain * gamma * (W - mean) /
    (std * sqrt(fan_in))``. With unit-variance inputs the output variance is then ~1 without any
    normalisation layer. ``padding``: ``None`` (symmetric), an int, or ``'same'`` (TF SAME).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | str | None = None, dilation: int = 1, groups: int = 1, bias: bool = True,
                 gamma: float = 1.0, eps: float = 1e-6, gain_init: float = 1.0) -> None:
        padding, self.dynamic_pad = resolve_padding("" if padding is None else padding, kernel_size,
                                                      stride=stride, dilation=dilation)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), float(gain_init)))
        fan_in = (in_channels // groups) * self.kernel_size[0] * self.kernel_size[1]
        self.scale = gamma * fan_in ** -0.5
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        """The filter the convolution actually applies."""
        return standardize_weight(self.weight, self.eps) * (self.gain * self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            x = pad_to_same(x, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)
