"""Absolute position embeddings: resampling to a new grid and fixed 2-D sin-cos tables."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["resample_abs_pos_embed", "resample_abs_pos_embed_nhwc", "build_sincos2d_pos_embed"]


def _interp_grid(grid: torch.Tensor, new_size: tuple[int, int], interpolation: str, antialias: bool) -> torch.Tensor:
    """Resize an NCHW grid in float32 (bicubic on half tensors is unsupported or inexact on CPU)."""
    dtype = grid.dtype
    align = False if interpolation in ("bilinear", "bicubic") else None
    out = F.interpolate(grid.float(), size=new_size, mode=interpolation, align_corners=align,
                        antialias=antialias and interpolation in ("bilinear", "bicubic"))
    return out.to(dtype)


def resample_abs_pos_embed(
    posemb: torch.Tensor,
    new_size: tuple[int, int],
    old_size: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    interpolation: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resize a ``[1, prefix + H*W, C]`` position embedding to the grid ``new_size`` (``(H, W)``).

    The first ``num_prefix_tokens`` rows (class/register tokens that own an embedding) are kept
    as they are; the rest is treated as an ``H x W`` grid (square when ``old_size`` is omitted) and
    resampled, bicubic by default, as done when fine-tuning ViTs at a higher resolution
    (Dosovitskiy et al., 2021, section 3.2). Sizes may be any length-2 sequence in eager mode;
    TorchScript (which calls this from ``dynamic_img_size`` ViTs) passes tuples.
    """
    new_hw = (int(new_size[0]), int(new_size[1]))
    num_pos = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(math.sqrt(num_pos))
        if side * side != num_pos:
            raise ValueError(f"position embedding with {num_pos} grid tokens is not square; pass old_size")
        old_hw = (side, side)
    else:
        old_hw = (int(old_size[0]), int(old_size[1]))
    if old_hw[0] * old_hw[1] != num_pos:
        raise ValueError(f"old_size {old_hw} does not match {num_pos} grid tokens")
    if new_hw[0] == old_hw[0] and new_hw[1] == old_hw[1]:
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim = posemb.shape[-1]
    grid = grid.reshape(grid.shape[0], old_hw[0], old_hw[1], dim).permute(0, 3, 1, 2)
    grid = _interp_grid(grid, new_hw, interpolation, antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(grid.shape[0], new_hw[0] * new_hw[1], dim)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens > 0 else grid


def resample_abs_pos_embed_nhwc(posemb: torch.Tensor, new_size: Sequence[int], interpolation: str = "bicubic",
                                antialias: bool = True) -> torch.Tensor:
    """Resize a ``[1, H, W, C]`` position embedding to ``new_size``."""
    new_size = (int(new_size[0]), int(new_size[1]))
    if tuple(posemb.shape[1:3]) == new_size:
        return posemb
    grid = _interp_grid(posemb.permute(0, 3, 1, 2), new_size, interpolation, antialias)
    return grid.permute(0, 2, 3, 1)


def build_sincos2d_pos_embed(
    grid_size: Sequence[int],
    dim: int,
    temperature: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding ``[H*W, dim]`` (MoCo v3, Chen et al., 2021).

    A quarter of the channels each holds ``sin``/``cos`` of the column and row index at
    geometrically spaced frequencies, so relative offsets are linear functions of the embedding.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    h, w = int(grid_size[0]), int(grid_size[1])
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                                torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    out_w = cols.reshape(-1, 1) * omega.reshape(1, -1)
    out_h = rows.reshape(-1, 1) * omega.reshape(1, -1)
    emb = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return emb.to(dtype)
