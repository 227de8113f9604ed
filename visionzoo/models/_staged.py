"""Model-interface code shared by the staged CNN / hierarchical families.

Each family used to re-write the same ``forward`` / classifier / ``forward_intermediates`` /
``prune_intermediate_layers`` bodies. Here they are written once, as mixins, and a family only
states how it is laid out:

* :class:`ClassifierHeadMixin` - the classifier is one ``self.head`` module with ``.fc`` and
  ``.reset()`` (``ClassifierHead`` and friends).
* :class:`StagedFeaturesMixin` - ``stem -> stages -> final op`` nets (ResNet, ResNetV2, RegNet,
  VoVNet, ConvNeXt, Swin): feature levels are an optional stem map then one map per stage.
* :class:`FlatFeaturesMixin` - nets whose body is one flat ``self.features`` ``nn.Sequential`` kept
  for the published checkpoint layout (VGG, DenseNet): levels are outputs of modules inside it.

The mixins are plain classes (listed before ``nn.Module`` in the bases) so they combine freely and
stay TorchScript-compatible: ``forward`` only calls the family's own ``forward_features`` /
``forward_head``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..features import feature_take_indices
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq

__all__ = ["ModelForwardMixin", "ClassifierHeadMixin", "StagedFeaturesMixin", "FlatFeaturesMixin"]

Intermediates = Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]


def _check_output_fmt(model: Any, output_fmt: str, supported: Sequence[str]) -> None:
    if output_fmt not in supported:
        raise ValueError(f"{type(model).__name__} supports output_fmt {' or '.join(map(repr, supported))}, "
                         f"got {output_fmt!r}")


def convert_fmt(x: torch.Tensor, native_fmt: str, output_fmt: str) -> torch.Tensor:
    """A ``native_fmt`` map in ``output_fmt`` (NCHW <-> NHWC).

    NHWC is returned as a permuted view (what channels-last consumers read anyway); NCHW is made
    contiguous because convolution-based consumers (FPNs, decoders) expect it.
    """
    if output_fmt == native_fmt:
        return x
    if native_fmt == "NCHW":
        return x.permute(0, 2, 3, 1)
    return x.permute(0, 3, 1, 2).contiguous()


class ModelForwardMixin:
    """``forward`` as the interface defines it: ``forward_head(forward_features(x))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class ClassifierHeadMixin(ModelForwardMixin):
    """Classifier access for families whose head is one ``self.head`` module exposing ``fc`` and
    ``reset(num_classes, pool_type)`` and taking ``pre_logits`` in its forward."""

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)


class StagedFeaturesMixin:
    """``forward_intermediates`` / ``prune_intermediate_layers`` / ``set_grad_checkpointing`` for
    ``stem -> stages -> final op`` nets.

    Feature levels index ``feature_info`` (after pruning, the levels that remain). With
    ``_stem_level`` level 0 is a map taken inside or at the end of the stem and stage ``j`` gives
    level ``j + 1``; without it stage ``j`` is level ``j``.
    When every stage has run, the final op (``_final``: a norm or 1x1 conv before the head) is
    applied to the returned features; with ``_norm_is_final`` the ``norm=True`` option applies it to
    the last level's map as well. A family provides the hooks below and keeps its own pruning rules
    in ``_prune_to``.
    """

    # (no class-level annotations: TorchScript would take them in place of nn.Module's own)
    _stem_level = True  # feature_info[0] is a stem map
    _native_fmt = "NCHW"  # layout the stages compute in
    _output_fmts = ("NCHW",)  # layouts forward_intermediates can return
    _norm_is_final = False  # ``norm=True`` applies ``_final`` to the last level's map

    # --- hooks ---------------------------------------------------------------------------------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(input of the first stage, level-0 map or ``None`` without a stem level)."""
        raise NotImplementedError

    def _feature_stages(self) -> list[nn.Module]:
        """The current stages in order (after pruning, the kept ones)."""
        raise NotImplementedError

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run stage ``index`` (0-based); a family overrides this for stage-external checkpointing
        or a stem tail that only runs when a stage follows."""
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """The op between the last stage and the head (identity when there is none)."""
        return x

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        """Keep the first ``num_stages`` stages and drop what no longer has a use."""
        raise NotImplementedError

    # --- interface ------------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Flag the model and every stage that checkpoints its own blocks."""
        self.grad_checkpointing = enable
        for stage in self._feature_stages():
            if hasattr(stage, "grad_checkpointing"):
                stage.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Intermediates:
        """Maps at ``indices`` of ``feature_info`` and (unless ``intermediates_only``) the features.

        With ``stop_early`` or ``intermediates_only`` no stage after the deepest index runs.
        """
        _check_output_fmt(self, output_fmt, self._output_fmts)
        first = 1 if self._stem_level else 0  # level of the first stage
        stages = self._feature_stages()
        num_stages = len(stages)
        last = first + num_stages - 1  # level of the last (kept) stage
        take, max_index = feature_take_indices(last + 1, indices)
        if stop_early or intermediates_only:
            stages = stages[:max_index + 1 - first]

        intermediates: list[torch.Tensor] = []
        x, stem_map = self._forward_stem(x)
        if first and 0 in take:
            intermediates.append(convert_fmt(stem_map, self._native_fmt, output_fmt))
        for i, stage in enumerate(stages):
            x = self._run_stage(i, stage, x)
            if i + first in take:
                y = self._final(x) if norm and self._norm_is_final and i + first == last else x
                intermediates.append(convert_fmt(y, self._native_fmt, output_fmt))
        if intermediates_only:
            return intermediates
        if len(stages) == num_stages:
            x = self._final(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the deepest index (and, with ``prune_head``, the classifier)."""
        first = 1 if self._stem_level else 0
        take, max_index = feature_take_indices(first + len(self._feature_stages()), indices)
        self._prune_to(max_index + 1 - first, prune_norm)
        if prune_head:
            self.reset_classifier(0, "")
        return take


class FlatFeaturesMixin:
    """Forward and feature extraction for nets whose body is one flat ``self.features`` Sequential.

    Level ``i`` is the output of the module named by ``feature_info[i]['module']``
    (``features.<name>``); per-module gradient checkpointing follows ``self.grad_checkpointing``.
    """

    def _run(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_module(m, x)
        return m(x)

    def _level_positions(self) -> list[int]:
        """Positions in ``features`` of the modules that output each level still present (pruning
        keeps a prefix of the levels)."""
        pos = {name: i for i, name in enumerate(self.features._modules)}
        out = []
        for info in self.feature_info:
            name = info["module"].split(".", 1)[1]
            if name not in pos:
                break
            out.append(pos[name])
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # written out rather than through ``_run``: TorchScript has no module-typed parameters
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.features, x)
        return self.features(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Intermediates:
        """Maps at ``indices`` of ``feature_info`` and (unless ``intermediates_only``) the features.

        With ``stop_early`` or ``intermediates_only`` no module after the deepest level runs.
        """
        _check_output_fmt(self, output_fmt, ("NCHW",))
        positions = self._level_positions()
        take, max_index = feature_take_indices(len(positions), indices)
        wanted = {positions[i] for i in take}
        mods = list(self.features)
        if stop_early or intermediates_only:
            mods = mods[:positions[max_index] + 1]
        intermediates = []
        for i, m in enumerate(mods):
            x = self._run(m, x)
            if i in wanted:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop ``features`` modules after the deepest level and, with ``prune_head``, the classifier."""
        positions = self._level_positions()
        take, max_index = feature_take_indices(len(positions), indices)
        self.features = self.features[:positions[max_index] + 1]
        if prune_head:
            self.reset_classifier(0, "")
        return take
