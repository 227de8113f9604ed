"""The model interface every registered model provides (checked by tests/test_interface.py)."""
from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import torch
import torch.nn as nn

__all__ = ["VisionModel"]


@runtime_checkable
class VisionModel(Protocol):
    """What users and the library rely on, whatever the family.

    * ``num_features``: channels of ``forward_features`` output (before pooling);
      ``head_hidden_size``: width of ``forward_head(x, pre_logits=True)``.
    * ``feature_info``: one ``{num_chs, reduction, module}`` dict per feature level.
    * ``forward_intermediates(x, indices)``: ``indices`` index ``feature_info`` (an int ``n``
      means the last ``n``); returns ``(final_features, [maps])`` or just the maps with
      ``intermediates_only=True``.
    * ``prune_intermediate_layers(indices)``: drop layers after the deepest index (and the head);
      afterwards ``forward_intermediates`` indices address the levels that remain.
    """

    num_classes: int
    num_features: int
    head_hidden_size: int
    feature_info: list[dict[str, Any]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> Any: ...

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]: ...

    def get_classifier(self) -> nn.Module: ...

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None: ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...
