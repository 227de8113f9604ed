"""Spatial-reduction attention (PVT, Wang et al. 2021; PVTv2, Wang et al. 2022; Twins GSA, Chu et al. 2021).

Queries come from every position of the map; keys and values from a coarser copy of it, so the
cost of attention on a high-resolution stage falls by ``sr_ratio ** 2``. The coarse copy is a
strided ``sr_ratio`` x ``sr_ratio`` conv + LayerNorm (PVT / Twins global sub-sampled attention),
or, in PVTv2's *linear* SRA, an adaptive average pool to a fixed ``pool_size`` grid + 1x1 conv +
LayerNorm + GELU (cost linear in the number of positions). ``sr_ratio == 1`` (and not linear) is
plain multi-head self-attention with separate ``q`` and ``kv`` projections.

Parameter names (``q``, ``kv``, ``proj``, ``sr``, ``norm``) follow the published checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .attention import scaled_dot_product_attention
from .config import use_fused_attn

__all__ = ["SpatialReductionAttention"]


class SpatialReductionAttention(nn.Module):
    """Multi-head attention over a channels-last map ``[B, H, W, C]`` with reduced keys/values.

    Args:
        dim: channels; ``num_heads`` must divide it.
        sr_ratio: kernel and stride of the reducing conv (``1``: no reduction).
        linear: PVTv2 linear SRA (pool to ``pool_size`` -> 1x1 conv -> norm -> GELU), whatever ``sr_ratio``.
        norm_eps: epsilon of the LayerNorm on the reduced map.
    """

    def __init__(self, dim: int, num_heads: int = 8, sr_ratio: int = 1, qkv_bias: bool = True, linear: bool = False,
                 pool_size: int = 7, attn_drop: float = 0.0, proj_drop: float = 0.0, norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reduce = linear or sr_ratio > 1
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(pool_size) if linear else nn.Identity()
        if linear:
            self.sr: nn.Module = nn.Conv2d(dim, dim, 1)
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
        else:
            self.sr = nn.Identity()
        self.norm: nn.Module = nn.LayerNorm(dim, eps=norm_eps) if self.reduce else nn.Identity()
        self.act: nn.Module = nn.GELU() if linear else nn.Identity()

    def reduced(self, x: torch.Tensor) -> torch.Tensor:
        """The key/value source: the (reduced) map as a ``[B, N', C]`` sequence."""
        if not self.reduce:
            return x.flatten(1, 2)
        y = self.sr(self.pool(x.permute(0, 3, 1, 2)))
        return self.act(self.norm(y.flatten(2).transpose(1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q = self.q(x).reshape(b, h * w, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(self.reduced(x))
        k, v = kv.reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = scaled_dot_product_attention(q, k, v, self.fused_attn,
                                         dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        x = x.transpose(1, 2).reshape(b, h, w, c)
        return self.proj_drop(self.proj(x))
