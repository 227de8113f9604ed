"""Two classifiers on the same pooled features, DeiT-style: ``head`` and the distillation ``head_dist``.

At inference the two heads' logits are averaged (what the published distilled checkpoints were
evaluated with); in training mode after ``set_distilled_training(True)`` both are returned, so a
distillation loss can pair ``head_dist`` with a teacher's predictions.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .conv_bn import distilled_logits

__all__ = ["DistilledHeadsMixin"]


class DistilledHeadsMixin:
    """Classifier interface of a model with ``head`` and ``head_dist`` over ``num_features``.

    The model calls :meth:`_init_heads` once its width is known (``self.num_features``) and
    :meth:`_distilled_heads` at the end of ``forward_head``. ``_make_head`` (a plain linear by
    default) and ``_set_global_pool`` are the per-family hooks.
    """

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _set_global_pool(self, global_pool: str) -> None:
        self.global_pool = global_pool

    def _init_heads(self, num_classes: int) -> None:
        self.distilled_training = False
        self._build_heads(num_classes)

    def _build_heads(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)
        self.head_dist = self._make_head(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self._set_global_pool(global_pool)
        self._build_heads(num_classes)

    def set_distilled_training(self, enable: bool = True) -> None:
        """Training mode then returns both heads' logits (for the distillation loss)."""
        self.distilled_training = enable

    def _distilled_heads(self, x: torch.Tensor) -> torch.Tensor:
        return distilled_logits(self.head(x), self.head_dist(x), self.distilled_training and self.training)
