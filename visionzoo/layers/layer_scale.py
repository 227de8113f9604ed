"""Per-channel residual-branch scaling (LayerScale, Touvron et al., 2021, "Going deeper with Image
Transformers", https://arxiv.org/abs/2103.17239)."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LayerScale", "LayerScale2d"]


class LayerScale(nn.Module):
    """Multiply the last (channel) dim by a learned vector ``gamma`` initialised to ``init_values``.

    A small initial value makes each residual branch start close to identity, which is what lets
    deep ViTs (CaiT, DeiT III, DINOv2) train stably.
    """

    def __init__(self, dim: int, init_values: float = 1e-5, inplace: bool = False) -> None:
        super().__init__()
        self.init_values = init_values
        self.inplace = inplace
        self.gamma = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(self.gamma) if self.inplace else x * self.gamma


class LayerScale2d(LayerScale):
    """LayerScale for NCHW maps (scales the channel dim 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma.view(1, -1, 1, 1)
        return x.mul_(gamma) if self.inplace else x * gamma
