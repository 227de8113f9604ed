"""Global context attention (Cao et al., 2019, "GCNet", https://arxiv.org/abs/1904.11492).

A softmax-weighted spatial pooling gives one context vector per image; a layer-normalised
bottleneck MLP transforms it, and the result is fused back by addition (``fuse_add``, the paper's
choice) and/or by a sigmoid channel gate (``fuse_scale``, SE-like).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .activations import LayerType, create_act_layer, get_act_layer
from .helpers import make_divisible
from .norm import LayerNorm2d

__all__ = ["GlobalContext", "ContextMlp"]


class ContextMlp(nn.Module):
    """1x1 conv ``fc1`` -> LayerNorm2d ``norm`` -> act -> 1x1 conv ``fc2`` on a [B, C, 1, 1] context."""

    def __init__(self, channels: int, hidden: int, act_layer: LayerType = nn.ReLU) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.norm = LayerNorm2d(hidden)
        self.act = get_act_layer(act_layer)()
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x))))


class GlobalContext(nn.Module):
    """GC block. ``use_attn=False`` pools by plain averaging instead of the learned softmax map."""

    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = False, fuse_scale: bool = True,
                 rd_ratio: float = 1.0 / 8, rd_channels: int | None = None, rd_divisor: int = 1,
                 act_layer: LayerType = nn.ReLU, gate_layer: LayerType = "sigmoid") -> None:
        super().__init__()
        self.conv_attn = nn.Conv2d(channels, 1, 1, bias=True) if use_attn else None
        hidden = rd_channels or make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.mlp_add = ContextMlp(channels, hidden, act_layer) if fuse_add else None
        self.mlp_scale = ContextMlp(channels, hidden, act_layer) if fuse_scale else None
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.conv_attn is not None:
            weights = self.conv_attn(x).reshape(b, 1, h * w).softmax(dim=-1)      # B, 1, HW
            ctx = torch.matmul(x.reshape(b, 1, c, h * w), weights.unsqueeze(-1))   # B, 1, C, 1
            ctx = ctx.reshape(b, c, 1, 1)
        else:
            ctx = x.mean(dim=(2, 3), keepdim=True)
        if self.mlp_scale is not None:
            x = x * self.gate(self.mlp_scale(ctx))
        if self.mlp_add is not None:
            x = x + self.mlp_add(ctx)
        return x
