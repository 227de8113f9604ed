"""Multi-scale features: ``feature_info`` records and the one ``features_only`` wrapper.

Every model implements ``forward_intermediates`` and ``prune_intermediate_layers``; the wrapper
only selects indices, prunes what comes after the last one and returns the list of maps. No
graph rewriting, no per-family wrappers.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

__all__ = ["FeatureInfo", "FeatureListNet", "feature_take_indices", "default_out_indices"]


class FeatureInfo:
    """Channels, reduction and module name of each selected feature map."""

    def __init__(self, feature_info: Sequence[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(f) for f in feature_info]
        self.out_indices = tuple(out_indices)

    def _get(self, key: str, idx: int | Sequence[int] | None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self._get("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [self.info[i] for i in self.out_indices]

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, channels={self.channels()}, reduction={self.reduction()})"


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """Normalise intermediate indices: an int ``n`` means the last ``n``; negatives count back.

    Returns (sorted absolute indices, largest index). Out-of-range indices raise ``ValueError``.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n indices must be in 1..{num_features}, got {indices}")
        take = list(range(num_features - indices, num_features))
    else:
        take = []
        for i in indices:
            j = i + num_features if i < 0 else i
            if not 0 <= j < num_features:
                raise ValueError(f"feature index {i} out of range for {num_features} feature levels")
            take.append(j)
    return take, max(take)


def default_out_indices(model: nn.Module) -> tuple[int, ...]:
    """A model's default ``out_indices`` (``model.default_out_indices`` or every level)."""
    idx = getattr(model, "default_out_indices", None)
    if idx is not None:
        return tuple(idx)
    return tuple(range(len(model.feature_info)))


class FeatureListNet(nn.Module):
    """Wrap a model so ``forward(x)`` returns the feature maps at ``out_indices`` (NCHW, or the model's ``output_fmt``).

    Layers after the deepest requested index, and the classifier, are removed, so the wrapped
    model's state_dict holds only what the features need.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None, output_fmt: str | None = None,
                 norm: bool = False) -> None:
        super().__init__()
        if not hasattr(model, "forward_intermediates"):
            raise TypeError(f"{type(model).__name__} has no forward_intermediates; features_only is unsupported")
        if out_indices is None:
            out_indices = default_out_indices(model)
        take, _ = feature_take_indices(len(model.feature_info), out_indices)
        self.out_indices = tuple(take)
        # default: the model's native map layout (``model.output_fmt``, e.g. NHWC for Swin), else NCHW
        self.output_fmt = output_fmt or getattr(model, "output_fmt", None) or "NCHW"
        self.norm = norm
        model.prune_intermediate_layers(self.out_indices, prune_head=True)
        # Share the model's module/parameter/buffer tables instead of nesting it, so the state_dict
        # keys are the base model's keys: backbone checkpoints load into the wrapper unchanged.
        object.__setattr__(self, "model", model)
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.pretrained_cfg = getattr(model, "pretrained_cfg", None)
        self.default_cfg = self.pretrained_cfg

    def train(self, mode: bool = True) -> "FeatureListNet":
        super().train(mode)
        self.model.training = mode
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices, norm=self.norm,
                                                output_fmt=self.output_fmt, intermediates_only=True)
