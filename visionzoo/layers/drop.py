"""Stochastic depth (drop path) and DropBlock regularisers."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["drop_path", "DropPath", "DropBlock2d", "drop_path_rates"]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True) -> torch.Tensor:
    """Stochastic depth (Huang et al., 2016): in training, each sample's residual branch survives
    with probability ``1 - drop_prob``; survivors are scaled by ``1 / (1 - drop_prob)`` so the
    expected output is unchanged (``scale_by_keep``)."""
    if not training or drop_prob <= 0.0:
        return x
    survival = 1.0 - drop_prob
    per_sample = [x.shape[0]] + [1] * (x.dim() - 1)  # one draw per sample, broadcast over the rest
    survived = torch.rand(per_sample, dtype=x.dtype, device=x.device) < survival
    scale = 1.0 / survival if scale_by_keep and survival > 0.0 else 1.0
    return x * (survived.to(x.dtype) * scale)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def drop_path_rates(drop_path_rate: float, depths: list[int] | int) -> list[list[float]] | list[float]:
    """Linearly increasing per-block rates, split per stage when ``depths`` is a list."""
    if isinstance(depths, int):
        total = depths
        return [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    total = sum(depths)
    flat = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(flat[start:start + d])
        start += d
    return out


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al., 2018): drop contiguous square regions of a feature map."""

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7, gamma_scale: float = 1.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size
        self.gamma_scale = gamma_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not self.drop_prob:
            return x
        _, _, h, w = x.shape
        bs = min(self.block_size, h, w)
        gamma = self.gamma_scale * self.drop_prob * (h * w) / (bs ** 2) / ((w - bs + 1) * (h - bs + 1))
        seeds = (torch.rand_like(x) < gamma).to(x.dtype)
        block_mask = 1.0 - F.max_pool2d(seeds, kernel_size=bs, stride=1, padding=bs // 2)
        if bs % 2 == 0:
            block_mask = block_mask[..., :h, :w]
        norm = block_mask.numel() / block_mask.sum().clamp(min=1.0)
        return x * block_mask * norm
