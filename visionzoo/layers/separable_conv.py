"""Depthwise-separable convolution: a per-channel spatial conv then a 1x1 channel mix.

Far fewer parameters and FLOPs than a dense kxk conv (Xception, MobileNet). State-dict keys are
``conv_dw``, ``conv_pw`` and ``bn``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .activations import LayerType, create_act_layer
from .norm import get_norm_layer
from .padding import create_conv2d_pad

__all__ = ["SeparableConvNormAct"]


class SeparableConvNormAct(nn.Module):
    """``conv_dw`` (kxk, groups=in) -> ``conv_pw`` (1x1) -> ``bn`` -> ``act``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        padding: int | str = "",
        bias: bool = False,
        channel_multiplier: float = 1.0,
        pw_kernel_size: int = 1,
        apply_norm: bool = True,
        apply_act: bool = True,
        norm_layer: LayerType = nn.BatchNorm2d,
        act_layer: LayerType = nn.ReLU,
        norm_kwargs: dict | None = None,
        act_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        dw_chs = int(in_channels * channel_multiplier)
        self.conv_dw = create_conv2d_pad(in_channels, dw_chs, kernel_size, stride=stride, dilation=dilation,
                                         padding=padding, groups=in_channels, bias=bias)
        self.conv_pw = create_conv2d_pad(dw_chs, out_channels, pw_kernel_size, padding=padding, bias=bias)
        norm = get_norm_layer(norm_layer) if apply_norm else None
        self.bn = norm(out_channels, **(norm_kwargs or {})) if norm is not None else nn.Identity()
        self.act = create_act_layer(act_layer if apply_act else None, **(act_kwargs or {}))

    @property
    def in_channels(self) -> int:
        return self.conv_dw.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv_pw.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv_pw(self.conv_dw(x))))
