"""Classifier heads whose modules are top-level attributes of the model (as published checkpoints
store them), written once as mixins rather than nested head modules:

* :class:`PooledConvHeadMixin`: the MobileNetV3-style pool -> ``conv_head`` -> act -> flatten ->
  ``classifier`` (mobile nets widen the pooled features with a 1x1 conv, cheap at 1x1 resolution);
* :class:`PoolFcHeadMixin`: ResNet-style ``global_pool`` -> dropout -> ``fc``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import LayerType, create_act_layer
from .pool import SelectAdaptivePool2d, create_classifier

__all__ = ["PooledConvHeadMixin", "PoolFcHeadMixin"]


class PooledConvHeadMixin:
    """Builds and runs the model attributes ``global_pool``, ``conv_head``, ``act``, ``flatten`` and
    ``classifier``; ``head_hidden_size`` is the conv's width, ``drop_rate`` the dropout before the
    classifier."""

    def _init_conv_head(self, in_chs: int, head_chs: int, num_classes: int, global_pool: str,
                        bias: bool = False, act_layer: LayerType = nn.ReLU) -> None:
        self.head_hidden_size = head_chs
        self.global_pool = SelectAdaptivePool2d(global_pool)
        self.conv_head = nn.Conv2d(in_chs, head_chs, 1, bias=bias)
        self.act = create_act_layer(act_layer, inplace=True)
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(head_chs, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool)
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.act(self.conv_head(self.global_pool(x))))
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class PoolFcHeadMixin:
    """``global_pool`` -> dropout (``drop_rate``) -> ``fc`` over ``num_features`` channels."""

    def _init_pool_fc(self, num_classes: int, global_pool: str) -> None:
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
