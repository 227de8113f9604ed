"""Pieces shared by Hiera (Ryali et al., 2023) and SAM2's Hiera-Det backbone (Ravi et al., 2024).

* :func:`max_pool_tokens`: Hiera's query pooling on an unrolled token sequence: the ``stride``
  finest-offset groups come first, so pooling a 2x2 neighbourhood is a max over that axis.
* :func:`abs_win_pos_embed`: the "absolute window" position embedding (Bolya et al., 2023,
  "Window Attention is Bugged"): a coarse global embedding resized (bicubic) to the token grid
  plus a window-sized embedding tiled over it, so every window sees the same window-relative code.
* :class:`NormPoolHead`: mean over all token positions -> LayerNorm -> dropout -> fc.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["max_pool_tokens", "mean_pool_tokens", "abs_win_pos_embed", "NormPoolHead"]


def max_pool_tokens(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``[B, stride * M, C]`` -> ``[B, M, C]``: max over the leading ``stride`` groups of tokens."""
    b, n, c = x.shape
    return x.view(b, stride, n // stride, c).amax(dim=1)


def mean_pool_tokens(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Like :func:`max_pool_tokens` with a mean."""
    b, n, c = x.shape
    return x.view(b, stride, n // stride, c).mean(dim=1)


def abs_win_pos_embed(global_embed: torch.Tensor, window_embed: torch.Tensor, size: tuple[int, int],
                      antialias: bool = False) -> torch.Tensor:
    """``[1, C, H, W]``: ``global_embed`` (``[1, C, h, w]``) resized to ``size`` plus ``window_embed``
    (``[1, C, wh, ww]``) tiled over it (``size`` is a multiple of the window)."""
    tiles = (size[0] // window_embed.shape[-2], size[1] // window_embed.shape[-1])
    pos = F.interpolate(global_embed, size=size, mode="bicubic", antialias=antialias, align_corners=False)
    return pos + window_embed.tile([1, 1, tiles[0], tiles[1]])


class NormPoolHead(nn.Module):
    """Average over the token / spatial dimensions ``pool_dims`` -> LayerNorm -> dropout -> fc.

    ``pool_type=''`` skips pooling (the norm and fc then act per token)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0,
                 eps: float = 1e-6, pool_dims: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        if pool_type not in ("avg", ""):
            raise ValueError(f"pool_type must be 'avg' or '', got {pool_type!r}")
        self.in_features = in_features
        self.pool_type = pool_type
        self.pool_dims = list(pool_dims)
        self.norm = nn.LayerNorm(in_features, eps=eps)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            if pool_type not in ("avg", ""):
                raise ValueError(f"pool_type must be 'avg' or '', got {pool_type!r}")
            self.pool_type = pool_type
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean(dim=self.pool_dims)
        x = self.drop(self.norm(x))
        return x if pre_logits else self.fc(x)
