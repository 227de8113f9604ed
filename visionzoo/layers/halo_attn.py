"""Blocked local self-attention with halos (Vaswani et al., 2021, "Scaling Local Self-Attention for
Parameter Efficient Visual Backbones", https://arxiv.org/abs/2103.12731).

The map is cut into non-overlapping ``block_size`` query blocks; each attends to the
``block_size + 2 * halo_size`` window around it (zero-padded at the border; the padding takes part
in the softmax), with 2-D relative position logits (query-block vs window grids). With
``stride=2`` the queries are subsampled (strided ``q`` projection) when the block size is even,
otherwise the output is average-pooled.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bottleneck_attn import RelPosEmbed2d
from .helpers import make_divisible
from .weight_init import trunc_normal_

__all__ = ["HaloAttn"]


class HaloAttn(nn.Module):
    def __init__(self, dim: int, dim_out: int | None = None, feat_size: object = None, stride: int = 1,
                 num_heads: int = 8, dim_head: int | None = None, block_size: int = 8, halo_size: int = 3,
                 qk_ratio: float = 1.0, qkv_bias: bool = False, avg_down: bool = False,
                 scale_pos_embed: bool = False) -> None:
        super().__init__()
        dim_out = dim_out or dim
        if dim_out % num_heads:
            raise ValueError(f"dim_out {dim_out} not divisible by num_heads {num_heads}")
        if stride not in (1, 2):
            raise ValueError(f"HaloAttn stride must be 1 or 2, got {stride}")
        self.num_heads = num_heads
        self.dim_head_qk = dim_head or make_divisible(dim_out * qk_ratio, divisor=8) // num_heads
        self.dim_head_v = dim_out // num_heads
        self.dim_out_qk = num_heads * self.dim_head_qk
        self.dim_out_v = num_heads * self.dim_head_v
        self.scale = self.dim_head_qk ** -0.5
        self.scale_pos_embed = scale_pos_embed
        self.block_size = block_size
        self.halo_size = halo_size
        self.win_size = block_size + 2 * halo_size
        pool = stride > 1 and (avg_down or block_size % stride != 0)
        self.block_stride = stride if stride > 1 and not pool else 1
        self.block_size_ds = block_size // self.block_stride
        self.q = nn.Conv2d(dim, self.dim_out_qk, 1, stride=self.block_stride, bias=qkv_bias)
        self.kv = nn.Conv2d(dim, self.dim_out_qk + self.dim_out_v, 1, bias=qkv_bias)
        self.pos_embed = RelPosEmbed2d((self.block_size_ds,) * 2, (self.win_size,) * 2, self.dim_head_qk, self.scale)
        self.pool = nn.AvgPool2d(2, 2) if pool else nn.Identity()
        self.out_stride = stride
        trunc_normal_(self.q.weight, std=dim ** -0.5)
        trunc_normal_(self.kv.weight, std=dim ** -0.5)
        trunc_normal_(self.pos_embed.height_rel, std=self.scale)
        trunc_normal_(self.pos_embed.width_rel, std=self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        bs = self.block_size
        pad_h, pad_w = (-h) % bs, (-w) % bs
        if pad_h or pad_w:
            # sizes the blocks do not divide: zero-extend bottom/right (like the halo padding, the
            # projections have no bias, so these positions read as zero keys/values), crop after
            stride = self.out_stride
            out = self._attend(F.pad(x, [0, pad_w, 0, pad_h]))
            out_h, out_w = (h + stride - 1) // stride, (w + stride - 1) // stride
            return out[:, :, :out_h, :out_w]
        return self._attend(x)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        bs, bsd, win, nh = self.block_size, self.block_size_ds, self.win_size, self.num_heads
        gh, gw = h // bs, w // bs
        nb = gh * gw
        # queries: [B*heads, blocks, bsd*bsd, d]
        q = self.q(x).reshape(b * nh, self.dim_head_qk, gh, bsd, gw, bsd)
        q = q.permute(0, 2, 4, 3, 5, 1).reshape(b * nh, nb, bsd * bsd, self.dim_head_qk)
        # keys/values: the (zero-padded) window around each block; per head [k | v] channels
        kv = F.pad(self.kv(x), [self.halo_size] * 4)
        kv = kv.unfold(2, win, bs).unfold(3, win, bs)                          # B, C, gh, gw, win, win
        kv = kv.reshape(b * nh, self.dim_head_qk + self.dim_head_v, nb, win * win).permute(0, 2, 3, 1)
        k, v = torch.split(kv, [self.dim_head_qk, self.dim_head_v], dim=-1)
        pos = self.pos_embed(q.reshape(b * nh * nb, bsd * bsd, -1)).reshape(b * nh, nb, bsd * bsd, win * win)
        if self.scale_pos_embed:
            attn = (q @ k.transpose(-1, -2) + pos) * self.scale
        else:
            attn = (q @ k.transpose(-1, -2)) * self.scale + pos
        out = attn.softmax(dim=-1) @ v                                          # B*heads, blocks, bsd*bsd, dv
        out = out.reshape(b, nh, gh, gw, bsd, bsd, self.dim_head_v)
        out = out.permute(0, 1, 6, 2, 4, 3, 5).reshape(b, self.dim_out_v, gh * bsd, gw * bsd)
        return self.pool(out)
