"""The one build path every built-in entrypoint takes: cfg -> construct -> load -> adapt -> wrap."""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .features import create_feature_model
from .pretrained.cfg import PretrainedCfg, merge_cfg
from .pretrained.load import FilterFn, load_pretrained, materialize_empty, skip_init_on_meta
from .registry import get_pretrained_cfg

__all__ = ["build_model", "resolve_pretrained_cfg", "check_model_kwargs", "init_non_persistent_buffers"]


def resolve_pretrained_cfg(
    variant: str,
    pretrained_cfg: PretrainedCfg | Mapping[str, Any] | str | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
) -> PretrainedCfg:
    """The cfg for ``variant``: an explicit cfg (object, dict or tag), else its default tag's."""
    if isinstance(pretrained_cfg, PretrainedCfg):
        cfg = pretrained_cfg
    elif isinstance(pretrained_cfg, Mapping):
        base = get_pretrained_cfg(variant) or PretrainedCfg(architecture=variant)
        cfg = merge_cfg(base, pretrained_cfg)
    elif isinstance(pretrained_cfg, str):
        cfg = get_pretrained_cfg(f"{variant}.{pretrained_cfg}") if pretrained_cfg else get_pretrained_cfg(variant)
    else:
        cfg = get_pretrained_cfg(variant)
    if cfg is None:
        cfg = PretrainedCfg(architecture=variant)
    cfg = merge_cfg(cfg, pretrained_cfg_overlay)
    if cfg.architecture is None:
        cfg.architecture = variant
    return cfg


def check_model_kwargs(variant: str, fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> None:
    """Raise a ``TypeError`` naming the model and argument for kwargs ``fn`` does not take."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        owner = getattr(fn, "__qualname__", repr(fn)).split(".")[0]
        raise TypeError(f"{variant} ({owner}) got unexpected argument(s) {', '.join(map(repr, unknown))}; "
                        f"it accepts: {', '.join(sorted(accepted - {'self'}))}")


def init_non_persistent_buffers(model: nn.Module) -> None:
    """Recompute buffers that are not in a state_dict after ``to_empty`` (e.g. position indices).

    Modules owning such buffers define ``init_non_persistent_buffers()``.
    """
    for m in model.modules():
        fn = getattr(m, "init_non_persistent_buffers", None)
        if callable(fn):
            fn()


def build_model(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool = False,
    *,
    pretrained_cfg: PretrainedCfg | Mapping[str, Any] | str | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    pretrained_strict: bool = True,
    pretrained_filter_fn: FilterFn | None = None,
    cache_dir: str | os.PathLike | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | int | None = None,
    feature_kwargs: Mapping[str, Any] | None = None,
    feature_cfg: Mapping[str, Any] | None = None,
    model_args: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``model_cls(**model_args, **kwargs)`` for ``variant`` and optionally load weights.

    * ``num_classes`` and ``in_chans`` default to the pretrained cfg's.
    * With ``pretrained=True`` the model is constructed on the meta device (no random init),
      materialised empty and filled from the checkpoint; a classifier the checkpoint cannot
      fill (other ``num_classes``) is re-created and randomly initialised.
    * ``features_only=True`` returns the family's wrapper (:func:`visionzoo.features.create_feature_model`;
      ``feature_cfg`` overrides the class's) over ``out_indices``; ``feature_cls``, ``output_fmt`` and
      ``flatten_sequential`` in ``kwargs`` go to the wrapper.
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
    args = dict(model_args or {})
    wrapper_args = dict(feature_kwargs or {})
    if features_only:
        for key in ("feature_cls", "output_fmt", "flatten_sequential"):
            if key in kwargs:
                wrapper_args[key] = kwargs.pop(key)
    user_keys = set(kwargs)
    args.update(kwargs)
    args.setdefault("num_classes", cfg.num_classes)
    args.setdefault("in_chans", cfg.input_size[0] if cfg.input_size else 3)
    check_model_kwargs(variant, model_cls, {k: args[k] for k in user_keys})

    load = pretrained and (cfg.has_weights)
    if pretrained and not cfg.has_weights:
        raise ValueError(f"{variant}{'.' + cfg.tag if cfg.tag else ''} has no pretrained weights; "
                         f"tags with weights: visionzoo.list_pretrained('{variant}*')")
    if load:
        with torch.device("meta"), skip_init_on_meta():
            model = model_cls(**args)
        model = materialize_empty(model, "cpu")
        init_non_persistent_buffers(model)
    else:
        model = model_cls(**args)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    if load:
        filter_fn = pretrained_filter_fn or getattr(model_cls, "checkpoint_filter_fn", None)
        report = load_pretrained(model, cfg, num_classes=args["num_classes"], in_chans=args["in_chans"],
                                 filter_fn=filter_fn, strict=pretrained_strict, cache_dir=cache_dir)
        if report.classifier_dropped:
            model.reset_classifier(args["num_classes"])
        model.pretrained_load_report = report
    if features_only:
        model = create_feature_model(model, feature_cfg=feature_cfg, out_indices=out_indices, **wrapper_args)
    return model
