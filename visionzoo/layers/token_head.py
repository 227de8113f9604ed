"""Classifier methods for token models whose head is ``pool tokens`` -> ``head_drop`` -> ``head``
(an ``nn.Linear``, stored as ``head.weight``): pooling is the class token (``'token'``), the mean of
the other tokens (``'avg'``) or none (``''``)."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["TokenLinearHeadMixin", "TOKEN_POOLS", "check_token_pool"]

TOKEN_POOLS = ("", "token", "avg")


def check_token_pool(global_pool: str) -> str:
    """``global_pool`` if it is a token pooling this head supports, else ValueError."""
    if global_pool not in TOKEN_POOLS:
        raise ValueError(f"global_pool must be '', 'token' or 'avg', got {global_pool!r}")
    return global_pool


class TokenLinearHeadMixin:
    """``global_pool`` (a string), ``head_drop`` and ``head`` over ``num_features``-wide tokens
    ``[B, num_prefix_tokens + N, C]``; written once so token families need not repeat them."""

    def _init_token_head(self, num_classes: int, global_pool: str, drop_rate: float) -> None:
        self.num_classes, self.global_pool = num_classes, check_token_pool(global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = check_token_pool(global_pool)
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)

    def _pool_tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "avg":
            return x[:, self.num_prefix_tokens:].mean(dim=1)
        if self.global_pool == "token":
            return x[:, 0]
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self._pool_tokens(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
