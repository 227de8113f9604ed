"""``stem -> stages -> norm`` trunks: ``forward_features`` and the ``FeatureMixin`` hooks for models
whose features end with one final norm (LayerNorm or BatchNorm) in front of the head."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["StagesFinalNormMixin"]


class StagesFinalNormMixin:
    """For a model with ``self.stem``, ``self.stages`` (``nn.Sequential``) and ``self.norm``: the
    norm is the op between trunk and head (``_final``), dropped with ``prune_norm``."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()
