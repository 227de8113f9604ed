"""Learned attention biases indexed by the absolute 2-D offset between a query and a key.

LeViT (Graham et al., 2021) and EfficientViT-MSRA (Liu et al., 2023) give every head one scalar
per offset ``(|dy|, |dx|)`` on a ``res x res`` grid: a table ``[heads, res * res]`` read through
an ``[Nq, Nk]`` index ``|dy| * res + |dx|``. Queries may sit on a strided grid (LeViT's
subsampling attention). The table is a function of the grid, so it is resampled as an image
when a checkpoint meets a model built for another size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["offset_bias_index", "resample_offset_bias"]


def offset_bias_index(q_size: tuple[int, int], k_size: tuple[int, int], table_width: int, stride: int = 1,
                      device: torch.device | None = None) -> torch.Tensor:
    """``[Nq, Nk]`` long index into a ``[heads, table_width ** 2]`` bias table.

    Query ``(i, j)`` sits at key position ``(i * stride, j * stride)``; the entry is
    ``|qy - ky| * table_width + |qx - kx|``.
    """
    qy = torch.arange(q_size[0], device=device) * stride
    qx = torch.arange(q_size[1], device=device) * stride
    ky = torch.arange(k_size[0], device=device)
    kx = torch.arange(k_size[1], device=device)
    dy = (qy[:, None, None, None] - ky[None, None, :, None]).abs()
    dx = (qx[None, :, None, None] - kx[None, None, None, :]).abs()
    idx = dy * table_width + dx
    return idx.reshape(q_size[0] * q_size[1], k_size[0] * k_size[1])


def resample_offset_bias(table: torch.Tensor, new_res: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Resize a ``[heads, res * res]`` offset table to ``[heads, new_res * new_res]``.

    Offsets are distances on the feature grid, so a model fine-tuned at another input size reads
    the table as a ``res x res`` image and interpolates it (the same idea as position-embedding
    resampling for ViTs).
    """
    heads, n = table.shape
    res = int(math.isqrt(n))
    if res * res != n:
        raise ValueError(f"offset bias table with {n} entries is not square")
    if res == new_res:
        return table
    grid = table.reshape(1, heads, res, res).float()
    align = False if interpolation in ("bilinear", "bicubic") else None
    grid = F.interpolate(grid, size=(new_res, new_res), mode=interpolation, align_corners=align)
    return grid.reshape(heads, new_res * new_res).to(table.dtype)
