"""Lambda layer (Bello, 2021, "LambdaNetworks: Modeling Long-Range Interactions Without
Attention", https://arxiv.org/abs/2102.08602).

Context is summarised into linear functions ("lambdas") applied to each query: a content lambda
``softmax(K) V^T`` shared by all positions, plus a position lambda per query, from either a local
``r x r`` lambda convolution over the values (``conv_lambda``) or, with ``r=None``, learned relative
position embeddings over a fixed ``feat_size`` (``pos_emb``). Queries are multi-headed; keys and
values are shared across heads (multi-query). ``stride=2`` average-pools the output.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import make_divisible, to_2tuple
from .weight_init import trunc_normal_

__all__ = ["LambdaLayer"]


class LambdaLayer(nn.Module):
    def __init__(self, dim: int, dim_out: int | None = None, feat_size: int | tuple[int, int] | None = None,
                 stride: int = 1, num_heads: int = 4, dim_head: int | None = 16, r: int | None = 9,
                 qk_ratio: float = 1.0, qkv_bias: bool = False) -> None:
        super().__init__()
        dim_out = dim_out or dim
        if dim_out % num_heads:
            raise ValueError(f"dim_out {dim_out} not divisible by num_heads {num_heads}")
        self.dim_qk = dim_head or make_divisible(dim_out * qk_ratio, divisor=8) // num_heads
        self.num_heads = num_heads
        self.dim_v = dim_out // num_heads
        self.qkv = nn.Conv2d(dim, num_heads * self.dim_qk + self.dim_qk + self.dim_v, 1, bias=qkv_bias)
        self.norm_q = nn.BatchNorm2d(num_heads * self.dim_qk)
        self.norm_v = nn.BatchNorm2d(self.dim_v)
        if r is not None:
            self.conv_lambda: nn.Module | None = nn.Conv3d(1, self.dim_qk, (r, r, 1), padding=(r // 2, r // 2, 0))
            self.pos_emb = None
            self.feat_size = None
        else:
            if feat_size is None:
                raise ValueError("LambdaLayer with relative position embeddings (r=None) needs feat_size")
            self.feat_size = to_2tuple(feat_size)
            self.conv_lambda = None
            self.pos_emb = nn.Parameter(torch.zeros(2 * self.feat_size[0] - 1, 2 * self.feat_size[1] - 1, self.dim_qk))
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        trunc_normal_(self.qkv.weight, std=self.qkv.weight.shape[1] ** -0.5)
        if self.conv_lambda is not None:
            trunc_normal_(self.conv_lambda.weight, std=self.dim_qk ** -0.5)
        if self.pos_emb is not None:
            trunc_normal_(self.pos_emb, std=0.02)

    def _position_embeddings(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``E[m, n]`` for query ``m`` and context position ``n`` (row-major): ``[HW, HW, K]``."""
        ys = torch.arange(h, device=device).repeat_interleave(w)
        xs = torch.arange(w, device=device).repeat(h)
        dy = ys[None, :] - ys[:, None] + (h - 1)
        dx = xs[None, :] - xs[:, None] + (w - 1)
        return self.pos_emb[dy, dx]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        m = h * w
        q, k, v = torch.split(self.qkv(x), [self.num_heads * self.dim_qk, self.dim_qk, self.dim_v], dim=1)
        q = self.norm_q(q).reshape(b, self.num_heads, self.dim_qk, m).transpose(-1, -2)   # B, heads, M, K
        v = self.norm_v(v).reshape(b, self.dim_v, m).transpose(-1, -2)                     # B, M, V
        k = F.softmax(k.reshape(b, self.dim_qk, m), dim=-1)                                # B, K, M
        content = q @ (k @ v).unsqueeze(1)                                                 # B, heads, M, V
        if self.conv_lambda is not None:
            lam = self.conv_lambda(v.reshape(b, 1, h, w, self.dim_v))                      # B, K, H, W, V
            lam = lam.reshape(b, 1, self.dim_qk, m, self.dim_v).transpose(2, 3)           # B, 1, M, K, V
        else:
            if (h, w) != self.feat_size:
                raise ValueError(f"LambdaLayer built for {self.feat_size}, got a {h}x{w} map")
            emb = self._position_embeddings(h, w, x.device).expand(b, -1, -1, -1)         # B, M, M, K
            lam = (emb.transpose(-1, -2) @ v.unsqueeze(1)).unsqueeze(1)                    # B, 1, M, K, V
        position = (q.unsqueeze(-2) @ lam).squeeze(-2)                                     # B, heads, M, V
        out = (content + position).transpose(-1, -2).reshape(b, -1, h, w)
        return self.pool(out)
