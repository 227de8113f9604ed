"""Multi-head attention pooling of a feature map (Radford et al., 2021, CLIP's ResNet head).

The map's ``H*W`` tokens are prefixed with their mean, given a learned absolute position
embedding (``pos_embed``, resampled when the map size differs from ``feat_size``), and attend with
separate ``q``/``k``/``v`` projections; the mean token's output (``pool_type='token'``) or the mean
of all outputs (``'avg'``) is projected by ``proj``, which doubles as the classifier.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import to_2tuple
from .pos_embed import resample_abs_pos_embed
from .weight_init import trunc_normal_

__all__ = ["AttentionPool2d"]


class AttentionPool2d(nn.Module):
    def __init__(self, in_features: int, feat_size: int | tuple[int, int] = 7, out_features: int | None = None,
                 embed_dim: int | None = None, head_dim: int = 64, num_heads: int | None = None,
                 qkv_bias: bool = True, pool_type: str = "token", drop_rate: float = 0.0) -> None:
        super().__init__()
        if pool_type not in ("token", "avg"):
            raise ValueError(f"AttentionPool2d pool_type must be 'token' or 'avg', got {pool_type!r}")
        embed_dim = embed_dim or in_features
        self.in_features = in_features
        self.embed_dim = embed_dim
        self.num_heads = num_heads or embed_dim // head_dim
        self.head_dim = embed_dim // self.num_heads
        self.feat_size = to_2tuple(feat_size)
        self.pool_type = pool_type
        self.pos_embed = nn.Parameter(torch.zeros(self.feat_size[0] * self.feat_size[1] + 1, in_features))
        self.q = nn.Linear(in_features, embed_dim, bias=qkv_bias)
        self.k = nn.Linear(in_features, embed_dim, bias=qkv_bias)
        self.v = nn.Linear(in_features, embed_dim, bias=qkv_bias)
        self.drop = nn.Dropout(drop_rate)
        self.out_features = out_features if out_features is not None else embed_dim
        self.proj = nn.Linear(embed_dim, self.out_features) if self.out_features > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=in_features ** -0.5)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            if pool_type not in ("token", "avg"):
                raise ValueError(f"AttentionPool2d pool_type must be 'token' or 'avg', got {pool_type!r}")
            self.pool_type = pool_type
        self.out_features = num_classes
        self.proj = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _heads(self, t: torch.Tensor, b: int) -> torch.Tensor:
        return t.reshape(b, -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)                                   # B, HW, C
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)       # B, 1 + HW, C
        pos = resample_abs_pos_embed(self.pos_embed.unsqueeze(0), (h, w), old_size=self.feat_size,
                                     num_prefix_tokens=1)
        tokens = tokens + pos.to(tokens.dtype)
        src = tokens[:, :1] if self.pool_type == "token" else tokens
        q = self._heads(self.q(src), b)
        k, v = self._heads(self.k(tokens), b), self._heads(self.v(tokens), b)
        out = F.scaled_dot_product_attention(q, k, v)                            # B, heads, Nq, d
        out = out.transpose(1, 2).reshape(b, -1, self.embed_dim)
        out = out[:, 0] if self.pool_type == "token" else out.mean(1)
        out = self.drop(out)
        if pre_logits:
            return out
        return self.proj(out)
