"""Local window self-attention with a relative position bias (Swin Transformer, Liu et al., 2021).

Tokens are NHWC feature maps split into non-overlapping ``Wh x Ww`` windows; attention runs
inside each window. Every head adds a learned bias indexed by the relative offset of the two
tokens (``(2Wh-1) * (2Ww-1)`` entries per head). Shifted windows (a cyclic roll of the map by
half a window) connect neighbouring windows; the tokens that the roll wraps around get an
additive mask so they do not attend to tokens that were not adjacent in the image.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import use_fused_attn
from .helpers import to_2tuple
from .weight_init import trunc_normal_

__all__ = ["window_partition", "window_reverse", "relative_position_index", "resize_rel_pos_bias_table",
           "shifted_window_mask", "WindowAttention"]

MASK_VALUE = -100.0  # additive mask between tokens from different image regions (as in the paper's code)


def window_partition(x: torch.Tensor, window_size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B * nW, Wh, Ww, C]`` (H, W multiples of the window)."""
    b, h, w, c = x.shape
    wh, ww = window_size
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh, ww, c)


def window_reverse(windows: torch.Tensor, window_size: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, Wh, Ww, C]`` -> ``[B, H, W, C]``."""
    wh, ww = window_size
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(window_size: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """``[N, N]`` index into the bias table for each (query, key) token pair of a window."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device),
                                        indexing="ij")).flatten(1)  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N]
    return (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)


def resize_rel_pos_bias_table(table: torch.Tensor, new_window_size: Sequence[int],
                              old_window_size: Sequence[int] | None = None) -> torch.Tensor:
    """Resample a ``[(2Wh-1)(2Ww-1), heads]`` bias table to another window size (bicubic).

    ``old_window_size`` defaults to the square window that the table's length implies.
    """
    new_h, new_w = (2 * s - 1 for s in new_window_size)
    if old_window_size is None:
        side = round(table.shape[0] ** 0.5)
        old_h = old_w = side
    else:
        old_h, old_w = (2 * s - 1 for s in old_window_size)
    if old_h * old_w != table.shape[0]:
        raise ValueError(f"bias table of {table.shape[0]} rows does not fit window {old_window_size}")
    if (old_h, old_w) == (new_h, new_w):
        return table
    dtype = table.dtype
    grid = table.float().t().reshape(1, -1, old_h, old_w)
    grid = F.interpolate(grid, size=(new_h, new_w), mode="bicubic", align_corners=False)
    return grid.reshape(-1, new_h * new_w).t().contiguous().to(dtype)


def shifted_window_mask(h: int, w: int, window_size: tuple[int, int], shift_size: tuple[int, int],
                        device: torch.device | None = None, mask_value: float = MASK_VALUE) -> torch.Tensor:
    """``[nW, N, N]`` additive mask for shifted windows over an ``h x w`` (padded) map.

    After the cyclic roll the map has up to 3x3 regions of tokens that were contiguous in the
    image; token pairs from different regions get ``mask_value`` (:data:`MASK_VALUE`; a parameter
    because TorchScript cannot read module globals).
    """
    wh, ww = window_size
    sh, sw = shift_size
    label = torch.zeros(1, h, w, 1, device=device)
    region = 0
    for hs in ((0, h - wh), (h - wh, h - sh), (h - sh, h)):
        for ws in ((0, w - ww), (w - ww, w - sw), (w - sw, w)):
            label[:, hs[0]:hs[1], ws[0]:ws[1], :] = region
            region += 1
    windows = window_partition(label, window_size).reshape(-1, wh * ww)  # [nW, N]
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, torch.full_like(diff, mask_value), torch.zeros_like(diff))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows of ``window_size`` with a relative position bias.

    Input ``[B * nW, N, C]`` with ``N = Wh * Ww``; ``mask`` (``[nW, N, N]``, optional) is added to
    the logits of each image's windows. ``relative_position_index`` is a derived, non-persistent
    buffer recomputed by :meth:`init_non_persistent_buffers` and :meth:`set_window_size`.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int | Sequence[int] = 7, head_dim: int | None = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.window_size = tuple(to_2tuple(window_size))
        self.fused_attn = use_fused_attn()
        attn_dim = self.head_dim * num_heads
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(attn_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        device = self.relative_position_bias_table.device
        self.relative_position_index = relative_position_index(self.window_size, device=device)

    def set_window_size(self, window_size: int | Sequence[int]) -> None:
        """Change the window size, resampling the bias table (weights stay usable)."""
        new = tuple(to_2tuple(window_size))
        if new == self.window_size:
            return
        with torch.no_grad():
            table = resize_rel_pos_bias_table(self.relative_position_bias_table.data, new, self.window_size)
        self.relative_position_bias_table = nn.Parameter(table)
        self.window_size = new
        self.init_non_persistent_buffers()

    def _rel_pos_bias(self) -> torch.Tensor:
        n = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)  # [1, heads, N, N]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self._rel_pos_bias()
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.reshape(1, nw, 1, n, n).to(bias.dtype))  # [1, nW, heads, N, N]
            bias = bias.expand(b // nw, -1, -1, -1, -1).reshape(b, self.num_heads, n, n)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        x = x.transpose(1, 2).reshape(b, n, -1)
        return self.proj_drop(self.proj(x))
