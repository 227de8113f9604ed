"""Bottleneck multi-head self-attention with 2-D relative position logits (Srinivas et al., 2021,
"Bottleneck Transformers for Visual Recognition", https://arxiv.org/abs/2101.11605).

All-to-all attention over an ``H x W`` map (a fixed ``feat_size``). The position term of the logit
between query ``(qh, qw)`` and key ``(kh, kw)`` is ``q . (r_h[kh - qh] + r_w[kw - qw])`` with learned
relative embeddings ``pos_embed.height_rel`` / ``pos_embed.width_rel`` (``2 * size - 1`` rows each);
:func:`relative_logits` also serves windowed (halo) attention, where queries and keys live on
different grids. With ``stride=2`` the output is average-pooled.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .helpers import make_divisible, to_2tuple
from .weight_init import trunc_normal_

__all__ = ["BottleneckAttn", "RelPosEmbed2d", "relative_logits"]


def _gather_rel(logits: torch.Tensor, num_keys: int) -> torch.Tensor:
    """``[..., Q, R]`` logits against ``R`` relative offsets -> ``[..., Q, K]`` against absolute keys.

    Query ``i`` (of ``Q``) and key ``j`` (of ``K``) sit at offset ``j - i``, stored at row
    ``j - i + (R + 1) // 2 - 1`` of the relative table.
    """
    num_q, num_rel = logits.shape[-2], logits.shape[-1]
    centre = (num_rel + 1) // 2 - 1
    q_idx = torch.arange(num_q, device=logits.device)
    idx = torch.arange(num_keys, device=logits.device)[None, :] - q_idx[:, None] + centre   # Q, K
    shape = list(logits.shape[:-1]) + [num_keys]
    return logits.gather(-1, idx.expand(shape))


def relative_logits(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, keys_hw: tuple[int, int]) -> torch.Tensor:
    """Position logits ``[N, qh*qw, kh*kw]`` for queries ``q`` of shape ``[N, qh, qw, d]``."""
    n, qh, qw, _ = q.shape
    kh, kw = keys_hw
    lw = _gather_rel(q @ rel_w.transpose(0, 1), kw)                                  # N, qh, qw, kw
    lh = _gather_rel((q.transpose(1, 2) @ rel_h.transpose(0, 1)), kh).transpose(1, 2)  # N, qh, qw, kh
    return (lh[..., :, None] + lw[..., None, :]).reshape(n, qh * qw, kh * kw)


class RelPosEmbed2d(nn.Module):
    """Learned relative position tables for queries on a ``q_size`` grid, keys on ``k_size``."""

    def __init__(self, q_size: tuple[int, int], k_size: tuple[int, int], dim_head: int, scale: float) -> None:
        super().__init__()
        self.q_size, self.k_size = tuple(q_size), tuple(k_size)
        self.height_rel = nn.Parameter(torch.randn(k_size[0] * 2 - 1, dim_head) * scale)
        self.width_rel = nn.Parameter(torch.randn(k_size[1] * 2 - 1, dim_head) * scale)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """``q``: ``[N, q_h * q_w, d]`` -> logits ``[N, q_h * q_w, k_h * k_w]``."""
        n = q.shape[0]
        q = q.reshape(n, self.q_size[0], self.q_size[1], -1)
        return relative_logits(q, self.height_rel, self.width_rel, self.k_size)


class BottleneckAttn(nn.Module):
    """BoTNet MHSA: 1x1 ``qkv`` projection, ``softmax(q k^T * scale + rel_pos) v``, optional 2x2 pool.

    ``dim_head`` (or ``qk_ratio``) sets the query/key width per head; values keep ``dim_out / heads``.
    """

    def __init__(self, dim: int, dim_out: int | None = None, feat_size: int | tuple[int, int] | None = None,
                 stride: int = 1, num_heads: int = 4, dim_head: int | None = None, qk_ratio: float = 1.0,
                 qkv_bias: bool = False, scale_pos_embed: bool = False) -> None:
        super().__init__()
        if feat_size is None:
            raise ValueError("BottleneckAttn needs a fixed feat_size (the model's img_size)")
        dim_out = dim_out or dim
        if dim_out % num_heads:
            raise ValueError(f"dim_out {dim_out} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dim_head_qk = dim_head or make_divisible(dim_out * qk_ratio, divisor=8) // num_heads
        self.dim_head_v = dim_out // num_heads
        self.dim_out_qk = num_heads * self.dim_head_qk
        self.dim_out_v = num_heads * self.dim_head_v
        self.scale = self.dim_head_qk ** -0.5
        self.scale_pos_embed = scale_pos_embed
        self.feat_size = to_2tuple(feat_size)
        self.qkv = nn.Conv2d(dim, self.dim_out_qk * 2 + self.dim_out_v, 1, bias=qkv_bias)
        self.pos_embed = RelPosEmbed2d(self.feat_size, self.feat_size, self.dim_head_qk, self.scale)
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        trunc_normal_(self.qkv.weight, std=dim ** -0.5)
        trunc_normal_(self.pos_embed.height_rel, std=self.scale)
        trunc_normal_(self.pos_embed.width_rel, std=self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if (h, w) != self.feat_size:
            raise ValueError(f"BottleneckAttn built for {self.feat_size}, got a {h}x{w} map")
        q, k, v = torch.split(self.qkv(x), [self.dim_out_qk, self.dim_out_qk, self.dim_out_v], dim=1)
        nh = self.num_heads
        q = q.reshape(b * nh, self.dim_head_qk, h * w).transpose(1, 2)     # BH, HW, d
        k = k.reshape(b * nh, self.dim_head_qk, h * w)                     # BH, d, HW
        v = v.reshape(b * nh, self.dim_head_v, h * w).transpose(1, 2)      # BH, HW, dv
        if self.scale_pos_embed:
            attn = (q @ k + self.pos_embed(q)) * self.scale
        else:
            attn = (q @ k) * self.scale + self.pos_embed(q)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, self.dim_out_v, h, w)
        return self.pool(out)
