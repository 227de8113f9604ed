"""Bilinear attentional transform non-local block (Chi et al., CVPR 2020, "Non-Local Neural
Networks With Grouped Bilinear Attentional Transforms").

The map is reduced (1x1 conv), then per group two row-stochastic ``b x b`` matrices ``P`` (from a
row-wise max pool) and ``Q`` (column-wise) are predicted; expanded to the map's size as
``kron(P, I_t)`` they mix rows and columns: ``y = P x Q``. The result is projected back and added
to the input.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import LayerType
from .conv_norm_act import ConvNormAct
from .helpers import make_divisible

__all__ = ["BilinearAttnTransform", "BatNonLocalAttn"]


def _kron_identity(m: torch.Tensor, t: int) -> torch.Tensor:
    """[B, C, b, b] -> [B, C, b*t, b*t]: each entry becomes ``entry * I_t``."""
    if t <= 1:
        return m
    eye = torch.eye(t, dtype=m.dtype, device=m.device)
    b, c, n, _ = m.shape
    out = m[:, :, :, None, :, None] * eye[None, None, None, :, None, :]   # B, C, n, t, n, t
    return out.reshape(b, c, n * t, n * t)


class BilinearAttnTransform(nn.Module):
    def __init__(self, in_channels: int, block_size: int, groups: int, act_layer: LayerType = nn.ReLU,
                 norm_layer: LayerType = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, groups, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.conv_p = nn.Conv2d(groups, block_size * block_size * groups, kernel_size=(block_size, 1))
        self.conv_q = nn.Conv2d(groups, block_size * block_size * groups, kernel_size=(1, block_size))
        self.conv2 = ConvNormAct(in_channels, in_channels, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.block_size = block_size
        self.groups = groups

    def _mixing(self, logits: torch.Tensor, b: int, c: int, dim: int) -> torch.Tensor:
        bs, g = self.block_size, self.groups
        m = logits.reshape(b, g, bs, bs).sigmoid()
        m = m / m.sum(dim=dim, keepdim=True)
        return m[:, :, None].expand(b, g, c // g, bs, bs).reshape(b, c, bs, bs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bs = self.block_size
        if h % bs or w % bs:
            raise ValueError(f"BAT block_size {bs} must divide the map size {h}x{w}")
        r = self.conv1(x)
        p = self._mixing(self.conv_p(F.adaptive_max_pool2d(r, (bs, 1))), b, c, 3)
        q = self._mixing(self.conv_q(F.adaptive_max_pool2d(r, (1, bs))), b, c, 2)
        y = _kron_identity(p, h // bs).matmul(x).matmul(_kron_identity(q, w // bs))
        return self.conv2(y)


class BatNonLocalAttn(nn.Module):
    """Residual BAT block: reduce (``conv1``) -> bilinear transform (``ba``) -> expand (``conv2``) + x."""

    def __init__(self, in_channels: int, block_size: int = 7, groups: int = 2, rd_ratio: float = 0.25,
                 rd_channels: int | None = None, rd_divisor: int = 8, drop_rate: float = 0.2,
                 act_layer: LayerType = nn.ReLU, norm_layer: LayerType = nn.BatchNorm2d, **_: object) -> None:
        super().__init__()
        rd = rd_channels or make_divisible(in_channels * rd_ratio, rd_divisor)
        self.conv1 = ConvNormAct(in_channels, rd, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.ba = BilinearAttnTransform(rd, block_size, groups, act_layer=act_layer, norm_layer=norm_layer)
        self.conv2 = ConvNormAct(rd, in_channels, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.dropout = nn.Dropout2d(p=drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.conv2(self.ba(self.conv1(x)))) + x
