"""Conv -> norm -> activation, the most repeated unit of CNNs.

State-dict keys are ``conv.*`` and ``bn.*`` (the activation has no weights), the layout
published CNN checkpoints use.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .activations import LayerType, create_act_layer
from .norm import get_norm_layer
from .padding import create_conv2d_pad

__all__ = ["ConvNormAct"]


class ConvNormAct(nn.Module):
    """``conv`` (no bias) -> ``bn`` -> ``act``, with optional anti-aliasing after the conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | str = "",
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        apply_norm: bool = True,
        apply_act: bool = True,
        norm_layer: LayerType = nn.BatchNorm2d,
        act_layer: LayerType = nn.ReLU,
        aa_layer: LayerType = None,
        norm_kwargs: dict | None = None,
        act_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        use_aa = aa_layer is not None and stride > 1
        self.conv = create_conv2d_pad(in_channels, out_channels, kernel_size, stride=1 if use_aa else stride,
                                      padding=padding, dilation=dilation, groups=groups, bias=bias)
        norm = get_norm_layer(norm_layer) if apply_norm else None
        self.bn = norm(out_channels, **(norm_kwargs or {})) if norm is not None else nn.Identity()
        self.act = create_act_layer(act_layer if apply_act else None, **(act_kwargs or {}))
        self.aa = aa_layer(channels=out_channels, stride=stride) if use_aa else nn.Identity()

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aa(self.act(self.bn(self.conv(x))))
