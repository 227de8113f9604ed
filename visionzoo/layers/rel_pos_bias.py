"""Relative position biases for global self-attention over a patch grid.

Two ways to turn the 2-D offset between two patches into a per-head logit bias:

* :class:`RelPosMlp` — a small MLP on log-spaced offsets (continuous position bias, Liu et al.,
  2022, "Swin Transformer V2", https://arxiv.org/abs/2111.09883). The MLP does not depend on the
  grid, so a model runs at another size by recomputing its (non-persistent) coordinate table.
* :class:`RelPosBias` — a learned table with one entry per offset and head (Shaw et al., 2018;
  Swin v1). A table trained for one grid is resampled for another
  (:func:`visionzoo.layers.window_attention.resize_rel_pos_bias_table`).

Both return a ``[1, heads, N, N]`` bias for ``N = prefix + H*W`` tokens; prefix tokens (class,
registers) get zero bias. The offset grid is indexed row-major: offset ``(dy, dx)`` is entry
``(dy + H - 1) * (2W - 1) + dx + W - 1``.

A third form, decomposed per-axis tables added to the attention map (Li et al., 2022, "MViTv2",
https://arxiv.org/abs/2112.01526, used by SAM's image encoder), is :func:`decomposed_rel_pos`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mlp import Mlp
from .weight_init import trunc_normal_
from .window_attention import relative_position_index, resize_rel_pos_bias_table

__all__ = ["relative_log_coords", "RelPosMlp", "RelPosBias", "get_rel_pos", "decomposed_rel_pos",
           "resize_rel_pos"]


def relative_log_coords(window_size: Sequence[int], mode: str = "cr",
                        pretrained_window_size: Sequence[int] | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """``[(2H-1) * (2W-1), 2]`` log-spaced ``(dy, dx)`` offsets of an ``H x W`` grid.

    ``mode='cr'``: ``sign(d) * ln(1 + |d|)`` (unnormalised); ``mode='swin'``: offsets scaled to
    ``[-8, 8]`` by the (pretrained) window, then ``sign(d) * log2(1 + |d|) / log2(8)``
    (Swin V2). Log spacing keeps far offsets, seen rarely, close to trained ones.
    """
    h, w = int(window_size[0]), int(window_size[1])
    dy = torch.arange(-(h - 1), h, device=device, dtype=torch.float32)
    dx = torch.arange(-(w - 1), w, device=device, dtype=torch.float32)
    coords = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1).reshape(-1, 2)
    if mode == "swin":
        ref = pretrained_window_size if pretrained_window_size is not None and pretrained_window_size[0] > 0 \
            else (h, w)
        coords = coords / torch.tensor([max(ref[0] - 1, 1), max(ref[1] - 1, 1)], device=device,
                                       dtype=torch.float32) * 8.0
        return torch.sign(coords) * torch.log2(1.0 + coords.abs()) / math.log2(8.0)
    if mode != "cr":
        raise ValueError(f"unknown relative coordinate mode {mode!r}; known: 'cr', 'swin'")
    return torch.sign(coords) * torch.log(1.0 + coords.abs())


def _expand(bias: torch.Tensor, index: torch.Tensor, num_heads: int, prefix_tokens: int) -> torch.Tensor:
    """Per-offset ``[(2H-1)(2W-1), heads]`` values -> ``[1, heads, N, N]`` with zero prefix rows/cols."""
    n = index.shape[0]
    out = bias[index.reshape(-1)].reshape(n, n, num_heads).permute(2, 0, 1)
    if prefix_tokens:
        out = F.pad(out, [prefix_tokens, 0, prefix_tokens, 0])
    return out.unsqueeze(0).contiguous()


class RelPosMlp(nn.Module):
    """Continuous relative position bias: ``mlp(log_coords(offset))`` per head (``mlp.fc1/fc2``).

    ``mode='swin'`` squashes the bias with ``16 * sigmoid`` and has no ``fc2`` bias (Swin V2);
    ``mode='cr'`` (default) uses the raw MLP output. The coordinate table and index are
    non-persistent buffers rebuilt by :meth:`set_window_size` / :meth:`init_non_persistent_buffers`.
    """

    def __init__(self, window_size: Sequence[int], num_heads: int = 8, hidden_dim: int = 128,
                 prefix_tokens: int = 0, mode: str = "cr", pretrained_window_size: Sequence[int] | None = None
                 ) -> None:
        super().__init__()
        self.window_size = (int(window_size[0]), int(window_size[1]))
        self.num_heads = num_heads
        self.prefix_tokens = prefix_tokens
        self.mode = mode
        self.pretrained_window_size = tuple(pretrained_window_size) if pretrained_window_size else None
        self.bias_gain = 16.0 if mode == "swin" else 0.0
        self.mlp = Mlp(2, hidden_dim, num_heads, act_layer=nn.ReLU, bias=(True, mode != "swin"))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size),
                             persistent=False)
        self.register_buffer("rel_coords_log", relative_log_coords(self.window_size, mode,
                                                                   self.pretrained_window_size), persistent=False)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        """Recompute the index and coordinates (after meta-device construction)."""
        device = self.rel_coords_log.device
        if device.type == "meta":
            return
        self.relative_position_index = relative_position_index(self.window_size, device=device)
        self.rel_coords_log = relative_log_coords(self.window_size, self.mode, self.pretrained_window_size,
                                                  device=device)

    def set_window_size(self, window_size: Sequence[int]) -> None:
        """Run on another patch grid: only the derived buffers change, the MLP is reused."""
        self.window_size = (int(window_size[0]), int(window_size[1]))
        device = self.rel_coords_log.device
        self.relative_position_index = relative_position_index(self.window_size, device=device)
        self.rel_coords_log = relative_log_coords(self.window_size, self.mode, self.pretrained_window_size,
                                                  device=device)

    def get_bias(self) -> torch.Tensor:
        """``[1, heads, N, N]`` additive attention bias."""
        table = self.mlp(self.rel_coords_log)
        out = _expand(table, self.relative_position_index, self.num_heads, 0)
        if self.bias_gain > 0.0:
            out = self.bias_gain * torch.sigmoid(out)
        if self.prefix_tokens:
            out = F.pad(out, [self.prefix_tokens, 0, self.prefix_tokens, 0])
        return out

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        return attn + self.get_bias()


class RelPosBias(nn.Module):
    """Learned relative position bias table ``[(2H-1)(2W-1), heads]`` (``relative_position_bias_table``).

    :meth:`set_window_size` resamples the table (bicubic over the offset grid) for a new grid;
    the model's ``checkpoint_filter_fn`` does the same for a checkpoint trained at another size.
    """

    def __init__(self, window_size: Sequence[int], num_heads: int = 8, prefix_tokens: int = 0) -> None:
        super().__init__()
        self.window_size = (int(window_size[0]), int(window_size[1]))
        self.num_heads = num_heads
        self.prefix_tokens = prefix_tokens
        num_rel = (2 * self.window_size[0] - 1) * (2 * self.window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size),
                             persistent=False)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        device = self.relative_position_index.device
        if device.type != "meta":
            self.relative_position_index = relative_position_index(self.window_size, device=device)

    def set_window_size(self, window_size: Sequence[int]) -> None:
        """Resample the table for another patch grid and rebuild the index."""
        new = (int(window_size[0]), int(window_size[1]))
        if new == self.window_size:
            return
        table = resize_rel_pos_bias_table(self.relative_position_bias_table.detach(), new, self.window_size)
        self.relative_position_bias_table = nn.Parameter(table)
        self.window_size = new
        self.relative_position_index = relative_position_index(new, device=table.device)

    def get_bias(self) -> torch.Tensor:
        return _expand(self.relative_position_bias_table, self.relative_position_index, self.num_heads,
                       self.prefix_tokens)

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        return attn + self.get_bias()


# --------------------------------------------------------------------------------------------
# decomposed (per-axis) relative position (MViTv2 / SAM)
# --------------------------------------------------------------------------------------------

def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a ``[L, C]`` per-axis table to ``length`` rows (identity if equal)."""
    if rel_pos.shape[0] == length:
        return rel_pos
    out = F.interpolate(rel_pos.t().unsqueeze(0).float(), size=length, mode="linear", align_corners=False)
    return out.squeeze(0).t().to(rel_pos.dtype)


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """``[q_size, k_size, C]`` embeddings of the offsets between query and key positions along one
    axis; sizes that differ are compared on a common scale (MViTv2), the table resampled to fit."""
    max_dist = 2 * max(q_size, k_size) - 1
    table = resize_rel_pos(rel_pos, max_dist)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[rel.long()]


def decomposed_rel_pos(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                       q_size: tuple[int, int], k_size: tuple[int, int]) -> torch.Tensor:
    """``[B, Nq, Nk]`` bias ``q . Rh[dy] + q . Rw[dx]`` for queries ``q`` ``[B, Nq, C]`` (MViTv2).

    Each query is dotted with the embedding of its vertical and horizontal offset to every key;
    the two terms are broadcast over the other axis, so the cost is ``O(N (H + W) C)``.
    """
    qh, qw = q_size
    kh, kw = k_size
    rh = get_rel_pos(qh, kh, rel_pos_h)
    rw = get_rel_pos(qw, kw, rel_pos_w)
    b, _, c = q.shape
    r_q = q.reshape(b, qh, qw, c)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    bias = bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]
    return bias.reshape(b, qh * qw, kh * kw)
