"""Transformer MLP blocks: plain (``fc1 -> act -> fc2``), GLU and SwiGLU variants."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from .activations import LayerType, get_act_layer
from .helpers import to_2tuple

__all__ = ["Mlp", "GluMlp", "SwiGLU"]


class Mlp(nn.Module):
    """``fc1 -> act -> drop -> norm -> fc2 -> drop``; ``use_conv`` makes the fcs 1x1 convs (NCHW)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: LayerType = nn.GELU, norm_layer: LayerType = None, bias: bool | tuple = True,
                 drop: float | tuple = 0.0, use_conv: bool = False) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        bias, drop = to_2tuple(bias), to_2tuple(drop)
        linear = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        self.fc1 = linear(in_features, hidden_features, bias=bias[0])
        self.act = get_act_layer(act_layer)()
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = linear(hidden_features, out_features, bias=bias[1])
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(self.norm(x)))


class GluMlp(nn.Module):
    """Gated MLP: ``fc1`` produces value and gate halves, ``value * act(gate)`` (Shazeer, 2020)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: LayerType = nn.Sigmoid, norm_layer: LayerType = None, bias: bool | tuple = True,
                 drop: float | tuple = 0.0, use_conv: bool = False, gate_last: bool = True) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        if hidden_features % 2:
            raise ValueError(f"GluMlp hidden_features must be even, got {hidden_features}")
        bias, drop = to_2tuple(bias), to_2tuple(drop)
        linear = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        self.chunk_dim = 1 if use_conv else -1
        self.gate_last = gate_last
        self.fc1 = linear(in_features, hidden_features, bias=bias[0])
        self.act = get_act_layer(act_layer)()
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(hidden_features // 2) if norm_layer is not None else nn.Identity()
        self.fc2 = linear(hidden_features // 2, out_features, bias=bias[1])
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.fc1(x).chunk(2, dim=self.chunk_dim)
        x = x1 * self.act(x2) if self.gate_last else self.act(x1) * x2
        x = self.drop1(x)
        return self.drop2(self.fc2(self.norm(x)))


class SwiGLU(nn.Module):
    """SwiGLU with separate ``fc1_g`` (gate) and ``fc1_x`` (value) projections."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: LayerType = nn.SiLU, norm_layer: LayerType = None, bias: bool | tuple = True,
                 drop: float | tuple = 0.0) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        bias, drop = to_2tuple(bias), to_2tuple(drop)
        self.fc1_g = nn.Linear(in_features, hidden_features, bias=bias[0])
        self.fc1_x = nn.Linear(in_features, hidden_features, bias=bias[0])
        self.act = get_act_layer(act_layer)()
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias[1])
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1_g(x)) * self.fc1_x(x)
        x = self.drop1(x)
        return self.drop2(self.fc2(self.norm(x)))
