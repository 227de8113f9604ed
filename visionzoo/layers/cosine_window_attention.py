"""Scaled cosine window attention with a continuous position bias (Swin Transformer V2, Liu et al., 2022).

V2 replaces the dot product by the cosine similarity of query and key times a learned per-head
scale (``exp(min(logit_scale, log 100))``): logits stay bounded in large models. The relative
position bias is not a lookup table but a small MLP evaluated on log-spaced relative coordinates
``sign(d) * log(1 + |d|)``, so a model trained at one window size extrapolates to another without
resampling a table: changing the window only recomputes the coordinate table.

Two layouts are provided, matching the two published checkpoint families:

* :class:`CosineWindowAttention` (Microsoft's Swin V2): ``q_bias``/``v_bias`` (no key bias),
  ``cpb_mlp`` (2 -> 512 -> heads, no output bias) on coordinates normalised by the (pretrained)
  window, scaled by 8 and ``log2(1 + |d|) / log2(8)``; the bias is ``16 * sigmoid(mlp)``.
* :class:`MetaCosineWindowAttention` (Christoph Reich's Swin V2 "cr"): full ``qkv`` bias, a
  ``meta_mlp`` (2 -> 384 -> heads, ReLU) on ``ln(1 + |d|)`` of the raw offsets, used as is.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import to_2tuple
from .mlp import Mlp
from .window_attention import relative_position_index

__all__ = ["swin_v2_coords_table", "log_relative_coords", "cosine_attention", "CosineWindowAttention",
           "MetaCosineWindowAttention"]


def swin_v2_coords_table(window_size: Sequence[int], pretrained_window_size: Sequence[int] = (0, 0),
                         device: torch.device | str | None = None) -> torch.Tensor:
    """``[(2Wh-1) * (2Ww-1), 2]`` log-spaced offsets, normalised by the pretrained window (or this
    one when it is 0) so that a larger window at fine-tuning reads offsets beyond the trained range."""
    wh, ww = window_size
    rel_h = torch.arange(-(wh - 1), wh, dtype=torch.float32, device=device)
    rel_w = torch.arange(-(ww - 1), ww, dtype=torch.float32, device=device)
    table = torch.stack(torch.meshgrid(rel_h, rel_w, indexing="ij"), dim=-1)  # [2Wh-1, 2Ww-1, 2]
    ph, pw = pretrained_window_size
    norm_h = float(ph - 1) if ph > 0 else float(wh - 1)
    norm_w = float(pw - 1) if pw > 0 else float(ww - 1)
    table = table / torch.tensor([max(norm_h, 1.0), max(norm_w, 1.0)], device=device) * 8.0
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.reshape(-1, 2)


def log_relative_coords(window_size: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """``[N * N, 2]`` offsets ``query - key`` of every token pair of a window, as ``sign(d) ln(1 + |d|)``."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device),
                                        indexing="ij")).flatten(1)  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).reshape(2, -1).t().float()
    return torch.sign(rel) * torch.log1p(rel.abs())


def cosine_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, logit_scale: torch.Tensor,
                     bias: torch.Tensor, mask: torch.Tensor | None = None,
                     dropout_p: float = 0.0, max_logit_scale: float = 4.605170185988092) -> torch.Tensor:
    """``softmax(cos(q, k) * scale + bias [+ mask]) @ v`` for ``[B*nW, heads, N, d]`` inputs.

    ``logit_scale`` broadcasts to ``[1, heads, 1, 1]``; ``bias`` is ``[1, heads, N, N]``; ``mask``
    (``[nW, N, N]``) is added per window of each image; the scale is capped at ``exp(max_logit_scale)``
    (= 100, a parameter because TorchScript cannot read module globals)."""
    b, h, n, _ = q.shape
    scale = torch.clamp(logit_scale.reshape(1, h, 1, 1), max=max_logit_scale).exp()
    q = F.normalize(q, dim=-1) * scale
    k = F.normalize(k, dim=-1)
    if mask is not None:
        nw = mask.shape[0]
        bias = bias.unsqueeze(0) + mask.reshape(1, nw, 1, n, n).to(bias.dtype)  # [1, nW, heads, N, N]
        bias = bias.expand(b // nw, -1, -1, -1, -1).reshape(b, h, n, n)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p, scale=1.0)


class CosineWindowAttention(nn.Module):
    """Swin V2 window attention: cosine logits, per-head scale, continuous position bias (CPB MLP).

    Input ``[B * nW, N, C]``. ``relative_position_index`` and ``relative_coords_table`` are derived,
    non-persistent buffers (:meth:`init_non_persistent_buffers`, :meth:`set_window_size`).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int | Sequence[int] = 7,
                 pretrained_window_size: int | Sequence[int] = 0, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, cpb_hidden: int = 512) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = tuple(to_2tuple(window_size))
        self.pretrained_window_size = tuple(to_2tuple(pretrained_window_size))
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias, self.v_bias = None, None
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(inplace=True),
                                     nn.Linear(cpb_hidden, num_heads, bias=False))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("relative_coords_table", swin_v2_coords_table(self.window_size,
                                                                           self.pretrained_window_size),
                             persistent=False)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)

    def init_non_persistent_buffers(self) -> None:
        device = self.logit_scale.device
        self.relative_coords_table = swin_v2_coords_table(self.window_size, self.pretrained_window_size, device)
        self.relative_position_index = relative_position_index(self.window_size, device=device)

    def set_window_size(self, window_size: int | Sequence[int]) -> None:
        """Another window: only the coordinate/index tables change (the MLP extrapolates)."""
        self.window_size = tuple(to_2tuple(window_size))
        self.init_non_persistent_buffers()

    def _rel_pos_bias(self) -> torch.Tensor:
        n = self.window_size[0] * self.window_size[1]
        table = self.cpb_mlp(self.relative_coords_table)  # [(2Wh-1)(2Ww-1), heads]
        bias = table[self.relative_position_index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
        return (16 * torch.sigmoid(bias)).unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv_bias: torch.Tensor | None = None
        q_bias, v_bias = self.q_bias, self.v_bias
        if q_bias is not None and v_bias is not None:
            qkv_bias = torch.cat((q_bias, torch.zeros_like(v_bias), v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = cosine_attention(q, k, v, self.logit_scale, self._rel_pos_bias(), mask,
                             dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class MetaCosineWindowAttention(nn.Module):
    """Swin V2 "cr" window attention: cosine logits, per-head ``logit_scale``, a meta-MLP position
    bias on ``ln(1 + |d|)`` offsets. ``relative_coordinates_log`` is a non-persistent buffer."""

    def __init__(self, dim: int, num_heads: int, window_size: int | Sequence[int] = 7,
                 meta_hidden: int = 384, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = tuple(to_2tuple(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.meta_mlp = Mlp(2, meta_hidden, num_heads, act_layer=nn.ReLU, drop=(0.125, 0.0))
        self.logit_scale = nn.Parameter(torch.full((num_heads,), math.log(10.0)))
        self.register_buffer("relative_coordinates_log", log_relative_coords(self.window_size), persistent=False)

    def init_non_persistent_buffers(self) -> None:
        self.relative_coordinates_log = log_relative_coords(self.window_size, device=self.logit_scale.device)

    def set_window_size(self, window_size: int | Sequence[int]) -> None:
        """Another window: only the coordinate table changes (the meta-MLP extrapolates)."""
        self.window_size = tuple(to_2tuple(window_size))
        self.init_non_persistent_buffers()

    def _rel_pos_bias(self) -> torch.Tensor:
        n = self.window_size[0] * self.window_size[1]
        bias = self.meta_mlp(self.relative_coordinates_log)  # [N*N, heads]
        return bias.t().reshape(1, self.num_heads, n, n)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = cosine_attention(q, k, v, self.logit_scale, self._rel_pos_bias(), mask,
                             dropout_p=self.attn_drop.p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))
