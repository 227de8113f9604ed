"""Classifier methods for models whose head is the top-level ``global_pool`` -> ``head_drop`` ->
``head`` (an ``nn.Linear``), as published checkpoints of several families store it (``head.weight``)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .pool import SelectAdaptivePool2d

__all__ = ["PoolLinearHeadMixin"]


class PoolLinearHeadMixin:
    """Builds and runs ``global_pool`` (flattening), ``head_drop`` and ``head`` over
    ``num_features`` channels; written once so families need not repeat the three methods."""

    def _init_pool_linear_head(self, num_classes: int, global_pool: str, drop_rate: float) -> None:
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)
