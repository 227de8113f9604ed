"""Rotary position embeddings (RoPE) for 2-D token grids.

RoPE (Su et al., 2021, "RoFormer", https://arxiv.org/abs/2104.09864) rotates pairs of query/key
channels by an angle proportional to the token position, so ``q . k`` depends on the relative
offset only. For images the channels are split between the two axes ("axial" RoPE, Heo et al.,
2024, https://arxiv.org/abs/2403.13298; EVA-02, Fang et al., 2023) or each channel pair gets a
learned direction in the plane ("mixed" RoPE, Heo et al., 2024).

An embedding is one tensor ``cat([sin, cos], -1)`` of width ``2 * head_dim`` per token (leading
dims broadcast against ``[B, heads, N, head_dim]``). Two channel layouts exist in published
weights:

* interleaved: channels ``(2i, 2i+1)`` form pair ``i`` (EVA-02, RoPE-ViT, Perception Encoder);
* half: channels ``i`` and ``i + head_dim/2`` form pair ``i`` (DINOv3).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["rotate_interleaved", "rotate_half", "apply_rope", "apply_rope_after_prefix", "rope_gather",
           "axial_rope_angles", "angles_to_embed", "AxialRope", "MixedRope"]


def rotate_interleaved(x: torch.Tensor) -> torch.Tensor:
    """Pairs ``(x[2i], x[2i+1]) -> (-x[2i+1], x[2i])`` (a 90 degree turn of each pair)."""
    pairs = x.reshape(list(x.shape[:-1]) + [-1, 2])
    return torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Pairs ``(x[i], x[i + d/2]) -> (-x[i + d/2], x[i])``."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: torch.Tensor, emb: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Rotate ``x`` (``[..., N, d]``) by ``emb`` (``[..., N, 2d]`` = sin, cos)."""
    sin, cos = emb.chunk(2, dim=-1)
    rot = rotate_half(x) if half else rotate_interleaved(x)
    return x * cos + rot * sin


def apply_rope_after_prefix(x: torch.Tensor, emb: torch.Tensor, num_prefix: int, half: bool = False) -> torch.Tensor:
    """:func:`apply_rope` on the tokens after the first ``num_prefix`` (class/register tokens stay)."""
    if num_prefix == 0:
        return apply_rope(x, emb, half).type_as(x)
    rotated = apply_rope(x[..., num_prefix:, :], emb, half)
    return torch.cat([x[..., :num_prefix, :], rotated.type_as(x)], dim=-2)


def rope_gather(emb: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Rows of ``emb`` (``[..., N, 2d]``, leading dims of size 1 or heads) kept per sample by
    ``keep`` (``[B, N']`` patch indices, e.g. from patch dropout): ``[B, ..., N', 2d]``."""
    b, n = keep.shape[0], keep.shape[1]
    emb = emb.unsqueeze(0).expand([b] + list(emb.shape))
    lead = list(emb.shape[1:-2])
    idx = keep.reshape([b] + [1] * len(lead) + [n, 1]).expand([b] + lead + [n, emb.shape[-1]])
    return emb.gather(-2, idx)


def axial_rope_angles(
    grid: List[int],
    num_bands: int,
    temperature: float = 10000.0,
    band_scale: float = 1.0,
    coords: str = "index",
    ref_grid: Optional[List[int]] = None,
    offset: float = 0.0,
    xy: bool = False,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Angles ``[H*W, 2 * num_bands]`` of axial RoPE on an ``H x W`` grid (row-major tokens).

    Band ``k`` has frequency ``band_scale * temperature ** (-k / num_bands)``. Positions per axis:

    * ``coords='index'``: ``i + offset``; with ``ref_grid`` rescaled to ``i * ref / size`` (a model
      fine-tuned at another size keeps its pre-training angle range, EVA-02);
    * ``coords='centered'``: patch centres in ``[-1, 1]``, ``2 (i + 0.5) / size - 1`` (DINOv3).

    The first ``num_bands`` angles belong to the row axis and the rest to the column axis, or the
    other way round with ``xy=True``.
    """
    h, w = int(grid[0]), int(grid[1])
    k = torch.arange(num_bands, dtype=torch.float32, device=device)
    bands = band_scale * temperature ** (-k / num_bands)
    pos: List[torch.Tensor] = []
    for i, size in enumerate([h, w]):
        t = torch.arange(size, dtype=torch.float32, device=device)
        if coords == "centered":
            t = 2.0 * (t + 0.5) / size - 1.0
        elif coords == "index":
            if ref_grid is not None:
                t = t / size * float(ref_grid[i])
            t = t + offset
        else:
            raise ValueError("coords must be 'index' or 'centered', got " + coords)
        pos.append(t)
    rows = pos[0].reshape(h, 1).expand(h, w).reshape(-1)
    cols = pos[1].reshape(1, w).expand(h, w).reshape(-1)
    first, second = (cols, rows) if xy else (rows, cols)
    return torch.cat([first[:, None] * bands, second[:, None] * bands], dim=-1)


def angles_to_embed(angles: torch.Tensor, half: bool = False) -> torch.Tensor:
    """``[..., d/2]`` pair angles -> ``[..., 2d]`` embedding in the interleaved or half layout."""
    full = torch.cat([angles, angles], dim=-1) if half else angles.repeat_interleave(2, dim=-1)
    return torch.cat([full.sin(), full.cos()], dim=-1)


class AxialRope(nn.Module):
    """Fixed axial RoPE for a ``head_dim`` (``head_dim / 4`` bands per axis).

    The table for the model's grid is a non-persistent buffer (``embed``); other grids (dynamic
    input sizes) are computed on the fly by :meth:`get_embed`. See :func:`axial_rope_angles` for
    the options.
    """

    def __init__(self, head_dim: int, grid: Optional[Sequence[int]] = None, temperature: float = 10000.0,
                 band_scale: float = 1.0, coords: str = "index", ref_grid: Optional[Sequence[int]] = None,
                 offset: float = 0.0, xy: bool = False, half: bool = False) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"axial RoPE needs head_dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.num_bands = head_dim // 4
        self.temperature = temperature
        self.band_scale = band_scale
        self.coords = coords
        self.ref_grid: Optional[List[int]] = [int(g) for g in ref_grid] if ref_grid is not None else None
        self.offset = offset
        self.xy = xy
        self.half = half
        self.grid: Optional[List[int]] = [int(g) for g in grid] if grid is not None else None
        # the grid of ``embed``; [-1, -1] when there is none (a non-empty int list for TorchScript)
        self.cached_grid = list(self.grid) if self.grid is not None else [-1, -1]
        n = self.grid[0] * self.grid[1] if self.grid is not None else 0
        self.register_buffer("embed", torch.zeros(n, 2 * head_dim), persistent=False)
        self.init_non_persistent_buffers()

    def _compute(self, grid: List[int], device: Optional[torch.device] = None) -> torch.Tensor:
        angles = axial_rope_angles(grid, self.num_bands, self.temperature, self.band_scale, self.coords,
                                   self.ref_grid, self.offset, self.xy, device=device)
        return angles_to_embed(angles, self.half)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        if self.grid is None or self.embed.is_meta:
            return
        self.embed.copy_(self._compute(self.grid, self.embed.device))

    def set_grid(self, grid: Optional[Sequence[int]]) -> None:
        """Make the cached table for a new model grid (``set_input_size``)."""
        self.grid = [int(g) for g in grid] if grid is not None else None
        self.cached_grid = list(self.grid) if self.grid is not None else [-1, -1]
        device = self.embed.device
        if self.grid is None:
            self.embed = torch.zeros(0, 2 * self.head_dim, device=device)
        elif self.embed.is_meta:
            self.embed = torch.zeros(self.grid[0] * self.grid[1], 2 * self.head_dim, device=device)
        else:
            self.embed = self._compute(self.grid, device)

    def get_embed(self, grid: List[int]) -> torch.Tensor:
        """``[H*W, 2 * head_dim]`` for ``grid`` (the model grid's table comes from the cache)."""
        cached = self.cached_grid
        if grid[0] == cached[0] and grid[1] == cached[1]:
            return self.embed
        return self._compute(grid, self.embed.device).to(self.embed.dtype)


class MixedRope(nn.Module):
    """RoPE-Mixed (Heo et al., 2024): every channel pair ``j`` of head ``h`` in layer ``l`` turns by
    ``x * fx[l, h, j] + y * fy[l, h, j]``, with the frequencies ``freqs = [fx; fy]`` learned
    (``[2, depth, heads, head_dim/2]``). Positions are patch indices; the layout is interleaved.

    :meth:`get_embed` returns ``[depth, heads, H*W, 2 * head_dim]``.
    """

    def __init__(self, head_dim: int, depth: int, num_heads: int, temperature: float = 10.0,
                 half: bool = False) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"mixed RoPE needs head_dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.depth = depth
        self.num_heads = num_heads
        self.temperature = temperature
        self.half = half
        self.freqs = nn.Parameter(torch.empty(2, depth, num_heads, head_dim // 2))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Per head a random rotation of two orthogonal directions with axial magnitudes."""
        if self.freqs.is_meta:
            return
        nb = self.head_dim // 4
        mag = self.temperature ** (-torch.arange(nb, dtype=torch.float32) / nb)
        theta = torch.rand(self.depth, self.num_heads, 1) * 2 * math.pi
        fx = torch.cat([mag * theta.cos(), mag * (theta + math.pi / 2).cos()], dim=-1)
        fy = torch.cat([mag * theta.sin(), mag * (theta + math.pi / 2).sin()], dim=-1)
        self.freqs.copy_(torch.stack([fx, fy]).to(self.freqs.dtype))

    def get_embed(self, grid: List[int]) -> torch.Tensor:
        h, w = grid[0], grid[1]
        dev = self.freqs.device
        ys = torch.arange(h, dtype=torch.float32, device=dev).reshape(h, 1).expand(h, w).reshape(-1)
        xs = torch.arange(w, dtype=torch.float32, device=dev).reshape(1, w).expand(h, w).reshape(-1)
        f = self.freqs.float()
        # [depth, heads, N, head_dim/2]
        angles = xs[:, None] * f[0].unsqueeze(-2) + ys[:, None] * f[1].unsqueeze(-2)
        return angles_to_embed(angles, self.half).to(self.freqs.dtype)
