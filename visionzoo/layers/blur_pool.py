"""BlurPool (Zhang, "Making Convolutional Networks Shift-Invariant Again", 2019).

Strided ops alias; low-pass filtering with a fixed binomial kernel before subsampling restores
much of the shift-invariance. The filter is a derived, non-persistent buffer (no weights).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .padding import get_padding

__all__ = ["BlurPool2d", "create_aa"]


def _binomial_filter(filt_size: int, device=None, dtype=None) -> torch.Tensor:
    """Normalised 2D binomial filter: outer product of row ``filt_size - 1`` of Pascal's triangle."""
    row = torch.tensor([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.float64)
    row = row / row.sum()
    return (row[:, None] * row[None, :]).to(device=device, dtype=dtype or torch.float32)


class BlurPool2d(nn.Module):
    """Depthwise binomial blur followed by subsampling with ``stride`` (reflect padded)."""

    def __init__(self, channels: int | None = None, filt_size: int = 3, stride: int = 2,
                 pad_mode: str = "reflect") -> None:
        super().__init__()
        if filt_size < 2:
            raise ValueError("BlurPool2d filt_size must be >= 2")
        self.filt_size, self.stride, self.pad_mode = filt_size, stride, pad_mode
        self.padding = [get_padding(filt_size, stride, dilation=1)] * 4  # same on all four sides (a list: TorchScript's F.pad)
        self.register_buffer("filt", torch.empty(filt_size, filt_size), persistent=False)
        self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        if self.filt.device.type == "meta":
            return
        self.filt.copy_(_binomial_filter(self.filt_size, self.filt.device, self.filt.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, self.padding, mode=self.pad_mode)
        w = self.filt.to(x.dtype)[None, None].expand(c, 1, self.filt_size, self.filt_size)
        return F.conv2d(x, w, stride=self.stride, groups=c)

    def extra_repr(self) -> str:
        return f"filt_size={self.filt_size}, stride={self.stride}, pad_mode={self.pad_mode!r}"


def create_aa(aa_layer: str | type | None, channels: int | None = None, stride: int = 2) -> nn.Module | None:
    """Anti-aliased downsampling by name: ``'avg'`` (2x2 average pool), ``'blur'`` (BlurPool2d,
    reflect padded) or ``'blurpc'`` (BlurPool2d, zero padded)."""
    if not aa_layer:
        return None
    if isinstance(aa_layer, str):
        key = aa_layer.lower().replace("_", "").replace("-", "")
        if key in ("avg", "avgpool"):
            return nn.AvgPool2d(kernel_size=stride, stride=stride)
        if key in ("blur", "blurpool"):
            return BlurPool2d(channels, stride=stride)
        if key == "blurpc":  # zero ("constant") padded blur
            return BlurPool2d(channels, stride=stride, pad_mode="constant")
        raise ValueError(f"unknown anti-aliasing layer {aa_layer!r}; use 'avg', 'blur' or 'blurpc'")
    if isinstance(aa_layer, type) and issubclass(aa_layer, nn.AvgPool2d):
        return aa_layer(kernel_size=stride, stride=stride)
    return aa_layer(channels=channels, stride=stride)
