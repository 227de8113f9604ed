"""Conv + BatchNorm saved as ``c`` / ``bn`` and the BatchNorm -> linear classifier (``bn`` / ``l``),
the units of the LeViT-descended mobile hybrids (RepViT, SHViT), plus the eval-time averaging of a
distilled model's two heads."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

__all__ = ["ConvBN", "NormLinear", "norm_linear_or_identity", "distilled_logits"]


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (keys ``c.*``, ``bn.*``); foldable into one conv."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: int | None = None,
                 groups: int = 1) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(OrderedDict(
            c=nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_chs)))


class NormLinear(nn.Module):
    """BatchNorm1d -> dropout -> linear on pooled features (``bn`` / ``l``)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop_rate)
        self.l = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l(self.drop(self.bn(x)))


def norm_linear_or_identity(in_features: int, num_classes: int, drop_rate: float = 0.0) -> nn.Module:
    """A :class:`NormLinear` classifier, or ``nn.Identity`` for ``num_classes=0`` (pre-logits out)."""
    return NormLinear(in_features, num_classes, drop_rate) if num_classes > 0 else nn.Identity()


def distilled_logits(y: torch.Tensor, y_dist: torch.Tensor, both: bool) -> torch.Tensor:
    """DeiT-style distillation: the class and distillation heads' logits as a pair while training
    the distillation (``both``), their mean otherwise (inference)."""
    if both and not torch.jit.is_scripting():
        return y, y_dist  # type: ignore[return-value]
    return (y + y_dist) / 2
