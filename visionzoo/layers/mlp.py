"""Transformer feed-forward blocks: plain, gated (GLU, Dauphin et al. 2017 / Shazeer 2020) and SwiGLU.

All three are "project up, mix, project down": they differ only in how the hidden activation is
formed from the input (``act(W1 x)``, ``a * act(b)`` from one doubled projection, or
``act(Wg x) * (Wx x)`` from two). The shared tail (dropout, optional hidden norm, down
projection, dropout) is written once in :class:`_FeedForward`; each class only adds its input
projection(s) and its mixing rule. Parameter names follow the published checkpoints
(``fc1``/``fc2``, ``fc1_g``/``fc1_x``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from .activations import LayerType, get_act_layer

__all__ = ["Mlp", "GluMlp", "SwiGLU"]


def _per_layer(value):
    """A ``(first, second)`` pair from one value or a pair (bias / dropout of the two projections)."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _projection(use_conv: bool) -> Callable[..., nn.Module]:
    """Linear layers on channels-last tokens, or 1x1 convs on NCHW maps."""
    return partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear


class _FeedForward(nn.Module):
    """``mix(x) -> dropout -> norm -> fc2 -> dropout``; subclasses define the input side."""

    def _add_tail(self, width: int, out_features: int, act_layer: LayerType, norm_layer: LayerType,
                  bias: bool, drop: tuple, proj: Callable[..., nn.Module]) -> None:
        # registered after the subclass's input projections: state_dict order is fc1*, norm, fc2
        self.act = get_act_layer(act_layer)()
        self.drop1 = nn.Dropout(drop[0])
        self.norm = norm_layer(width) if norm_layer is not None else nn.Identity()
        self.fc2 = proj(width, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop[1])

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self._mix(x)))))


class Mlp(_FeedForward):
    """``fc1 -> act``, then the shared tail; ``use_conv`` runs on NCHW maps with 1x1 convs."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: LayerType = nn.GELU, norm_layer: LayerType = None, bias: bool | tuple = True,
                 drop: float | tuple = 0.0, use_conv: bool = False) -> None:
        super().__init__()
        width = hidden_features or in_features
        biases, proj = _per_layer(bias), _projection(use_conv)
        self.fc1 = proj(in_features, width, bias=biases[0])
        self._add_tail(width, out_features or in_features, act_layer, norm_layer, biases[1], _per_layer(drop), proj)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1(x))


class GluMlp(_FeedForward):
    """Gated linear unit: one projection to twice the width, split into value and gate halves
    (``gate_last``: the second half gates), ``value * act(gate)``."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: LayerType = nn.Sigmoid, norm_layer: LayerType = None, bias: bool | tuple = True,
                 drop: float | tuple = 0.0, use_conv: bool = False, gate_last: bool = True) -> None:
        super().__init__()
        doubled = hidden_features or in_features
        if doubled % 2:
            raise ValueError(f"GluMlp hidden_features must be even (value and gate halves), got {doubled}")
        biases, proj = _per_layer(bias), _projection(use_conv)
        self.split_dim = 1 if use_conv else -1
        self.gate_last = gate_last
        self.fc1 = proj(in_features, doubled, bias=biases[0])
        self._add_tail(doubled // 2, out_features or in_features, act_layer, norm_layer, biases[1],
                       _per_layer(drop), proj)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.fc1(x).chunk(2, dim=self.split_dim)
        if self.gate_last:
            return first * self.act(second)
        return self.act(first) * second


class SwiGLU(_FeedForward):
    """SwiGLU (Shazeer, 2020) with separate gate (``fc1_g``) and value (``fc1_x``) projections."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: LayerType = nn.SiLU, norm_layer: LayerType = None, bias: bool | tuple = True,
                 drop: float | tuple = 0.0) -> None:
        super().__init__()
        width = hidden_features or in_features
        biases = _per_layer(bias)
        self.fc1_g = nn.Linear(in_features, width, bias=biases[0])
        self.fc1_x = nn.Linear(in_features, width, bias=biases[0])
        self._add_tail(width, out_features or in_features, act_layer, norm_layer, biases[1], _per_layer(drop),
                       nn.Linear)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1_g(x)) * self.fc1_x(x)
