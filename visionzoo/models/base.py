"""The family contract: one variant type, one registration call, one feature-extraction base.

A family module (``models/<family>.py``) holds its blocks, its model class(es) and one table::

    VARIANTS: dict[str, Variant] = {
        "convnext_atto": Variant(ConvNeXt, depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), conv_mlp=True),
        ...
    }
    register_family("convnext", VARIANTS)

``register_family`` turns every entry into a registry entrypoint that goes through the one
build path (:func:`visionzoo.builder.build_model`): pretrained cfg, meta-device construction
when weights are loaded, adaptation, ``features_only``. No family writes a ``_create`` function.

Model classes get ``forward_intermediates`` / ``prune_intermediate_layers`` /
``set_grad_checkpointing`` from :class:`FeatureMixin` by describing their layout with a few hooks,
whether they are stage-based CNNs, hierarchical transformers or plain token transformers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..features import feature_take_indices
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq

__all__ = ["Variant", "register_family", "FeatureMixin", "FlatFeaturesMixin", "ModelForwardMixin",
           "ClassifierHeadMixin", "convert_fmt", "Intermediates"]

Intermediates = Union[list[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, init=False)
class Variant:
    """One architecture: the model class, its constructor arguments and (rarely) its own
    ``features_only`` wrapper settings.

    ``Variant(ResNet, layers=(3, 4, 6, 3))``; derive related variants with :meth:`but`.
    ``feature_cfg`` overrides the model class's ``feature_cfg`` for this architecture only
    (keys ``feature_cls``, ``flatten_sequential``, ``out_indices``).
    """

    model_cls: type
    args: Mapping[str, Any] = field(default_factory=dict)
    feature_cfg: Optional[Mapping[str, Any]] = None

    def __init__(self, model_cls: type, feature_cfg: Mapping[str, Any] | None = None, **args: Any) -> None:
        object.__setattr__(self, "model_cls", model_cls)
        object.__setattr__(self, "args", _frozen(args))
        object.__setattr__(self, "feature_cfg", None if feature_cfg is None else _frozen(feature_cfg))

    def but(self, **changes: Any) -> "Variant":
        """A copy with some constructor arguments changed (``model_cls=``/``feature_cfg=`` too)."""
        cls = changes.pop("model_cls", self.model_cls)
        fcfg = changes.pop("feature_cfg", self.feature_cfg)
        return Variant(cls, feature_cfg=fcfg, **{**self.args, **changes})

    def build(self, name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        """Build architecture ``name`` from this variant through the one build path."""
        from ..builder import build_model

        if self.feature_cfg is not None:
            kwargs.setdefault("feature_cfg", dict(self.feature_cfg))
        return build_model(self.model_cls, name, pretrained, model_args=dict(self.args), **kwargs)


def register_family(module: str, variants: Mapping[str, Variant]) -> None:
    """Register every architecture of a family's ``VARIANTS`` table under its name."""
    from ..registry import register_variants

    bad = [n for n, v in variants.items() if not isinstance(v, Variant)]
    if bad:
        raise TypeError(f"{module}: VARIANTS entries must be Variant objects: {bad[:5]}")

    def create(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return variants[variant].build(variant, pretrained, **kwargs)

    register_variants(module, variants, create)


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


class FeatureMixin:
    """``forward_intermediates`` / ``prune_intermediate_layers`` / ``set_grad_checkpointing`` from
    a description of the network as ``stem -> trunk modules -> final op``.

    The trunk is a list of modules run in order (stages of a CNN, blocks of a ViT, the children
    of a flat ``features`` Sequential). Each ``feature_info`` level is read at one trunk position
    (``_level_positions``; ``-1`` = the stem's map), and turned into a map by ``_level_output``
    (layout conversion; token models strip prefix tokens and fold the sequence into a grid).
    Hooks a family provides:

    * ``_forward_stem(x) -> (trunk input, stem map or None)``
    * ``_feature_stages() -> list[nn.Module]`` (after pruning, the kept ones)
    * ``_prune_to(num_stages, prune_norm)``: keep the first ``num_stages`` trunk modules
    * optional: ``_run_stage``, ``_final``, ``_level_positions``, ``_level_output``

    Class attributes: ``_stem_level`` (level 0 is a stem map), ``_native_fmt`` / ``_output_fmts``
    (layouts), ``_norm_is_final`` (``norm=True`` applies ``_final`` to the last level's map),
    ``_final_after_stop_early`` (token models: the returned features are always normed).
    """

    # (no class-level annotations: TorchScript would take them in place of nn.Module's own)
    _stem_level = True
    _native_fmt = "NCHW"
    _output_fmts = ("NCHW",)
    _norm_is_final = False
    _final_after_stop_early = False  # apply ``_final`` to the returned features even when stopped early

    # --- hooks (defaults: the common ``self.stem`` -> ``self.stages`` layout, no stem level) -----
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.stem(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.stages)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run trunk module ``index``; override for checkpointing the trunk from outside."""
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """The op between the last trunk module and the head (identity when there is none)."""
        return x

    def _level_positions(self) -> list[int]:
        """Trunk position whose output is each level that still exists (``-1``: the stem map)."""
        stem = [-1] if self._stem_level else []
        return stem + list(range(len(self._feature_stages())))

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        """The map a level hands out, from the trunk tensor at its position."""
        if norm and self._norm_is_final and is_last:
            x = self._final(x)
        return convert_fmt(x, self._native_fmt, output_fmt)

    # --- interface ------------------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Flag the model and every trunk module that checkpoints its own blocks."""
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

        ``indices``: an int ``n`` means the last ``n`` levels. With ``stop_early`` or
        ``intermediates_only`` no trunk module after the deepest index runs.
        """
        if output_fmt not in self._output_fmts:
            raise ValueError(f"{type(self).__name__} supports output_fmt "
                             f"{' or '.join(map(repr, self._output_fmts))}, got {output_fmt!r}")
        positions = self._level_positions()
        stages = self._feature_stages()
        take, max_index = feature_take_indices(len(positions), indices)
        wanted = {positions[i]: i for i in take}
        last_pos = positions[-1]
        if stop_early or intermediates_only:
            stages = stages[:positions[max_index] + 1]
        in_size = (x.shape[-2], x.shape[-1])

        intermediates: list[torch.Tensor] = []
        x, stem_map = self._forward_stem(x)
        if -1 in wanted:
            intermediates.append(self._level_output(stem_map if stem_map is not None else x, last_pos == -1,
                                                    norm, output_fmt, in_size))
        for i, stage in enumerate(stages):
            x = self._run_stage(i, stage, x)
            if i in wanted:
                intermediates.append(self._level_output(x, i == last_pos, norm, output_fmt, in_size))
        if intermediates_only:
            return intermediates
        if self._final_after_stop_early or len(stages) == len(self._feature_stages()):
            x = self._final(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the trunk after the deepest index (and, with ``prune_head``, the classifier)."""
        positions = self._level_positions()
        take, max_index = feature_take_indices(len(positions), indices)
        self._prune_to(positions[max_index] + 1, prune_norm)
        if prune_head:
            self._prune_head()
        return take

    def _prune_head(self) -> None:
        """Remove the classifier (families whose head has more than a classifier drop that too)."""
        self.reset_classifier(0, "")


class FlatFeaturesMixin(FeatureMixin):
    """:class:`FeatureMixin` for nets whose body is one flat ``self.features`` Sequential (kept for
    the published checkpoint layout: VGG, DenseNet). The trunk is its children; level ``i`` is the
    output of the child named by ``feature_info[i]['module']`` (``features.<name>``)."""

    _stem_level = False

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return x, None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.features)

    def _level_positions(self) -> list[int]:
        pos = {name: i for i, name in enumerate(self.features._modules)}
        out = []
        for info in self.feature_info:  # pruning keeps a prefix of the levels
            name = info["module"].split(".", 1)[1]
            if name not in pos:
                break
            out.append(pos[name])
        return out

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_module(stage, x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.features = self.features[:num_stages]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.features, x)
        return self.features(x)
