"""Channel attention: Squeeze-and-Excitation, Effective SE and ECA."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .activations import LayerType, create_act_layer
from .helpers import make_divisible

__all__ = ["SEModule", "EffectiveSEModule", "EcaModule", "get_attn", "create_attn"]


class SEModule(nn.Module):
    """Squeeze-and-Excitation (Hu et al., 2018) with 1x1 convs ``fc1``/``fc2``."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int = 8,
                 add_maxpool: bool = False, bias: bool = True, act_layer: LayerType = nn.ReLU,
                 norm_layer: LayerType = None, gate_layer: LayerType = "sigmoid") -> None:
        super().__init__()
        self.add_maxpool = add_maxpool
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.bn = norm_layer(rd_channels) if norm_layer else nn.Identity()
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
        s = self.fc2(self.act(self.bn(self.fc1(s))))
        return x * self.gate(s)


class EffectiveSEModule(nn.Module):
    """eSE from CenterMask/VoVNetV2: one 1x1 conv ``fc`` without reduction, hard-sigmoid gate."""

    def __init__(self, channels: int, add_maxpool: bool = False, gate_layer: LayerType = "hard_sigmoid") -> None:
        super().__init__()
        self.add_maxpool = add_maxpool
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, padding=0)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
        return x * self.gate(self.fc(s))


class EcaModule(nn.Module):
    """Efficient Channel Attention (Wang et al., 2020): a 1D conv ``conv`` across channels."""

    def __init__(self, channels: int | None = None, kernel_size: int = 3, gamma: int = 2, beta: int = 1,
                 gate_layer: LayerType = "sigmoid") -> None:
        super().__init__()
        if channels is not None:
            # ECA-Net: k = |(log2 C + b) / gamma| rounded down to an int, then up to the next odd one
            k = int(abs((math.log2(channels) + beta) / gamma))
            kernel_size = max(k + 1 - k % 2, 3)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).view(x.shape[0], 1, -1)
        y = self.conv(y)
        return x * self.gate(y).view(x.shape[0], -1, 1, 1)


_ATTN = {"se": SEModule, "ese": EffectiveSEModule, "eca": EcaModule}


def get_attn(attn: LayerType):
    """Resolve a channel-attention layer by name (``'se'``, ``'ese'``, ``'eca'``) or class."""
    if attn is None or attn == "":
        return None
    if isinstance(attn, str):
        if attn.lower() not in _ATTN:
            raise ValueError(f"unknown attention layer {attn!r}; known: {', '.join(_ATTN)}")
        return _ATTN[attn.lower()]
    return attn


def create_attn(attn: LayerType, channels: int, **kwargs) -> nn.Module | None:
    layer = get_attn(attn)
    return layer(channels, **kwargs) if layer is not None else None
