"""Resolve the preprocessing a model expects (size, crop, interpolation, mean/std) from its cfg."""
from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

from ..pretrained.cfg import PretrainedCfg

__all__ = ["resolve_data_config", "resolve_model_data_config"]

_DEFAULTS = dict(input_size=(3, 224, 224), interpolation="bicubic", mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), crop_pct=0.875, crop_mode="center")


def _cfg_dict(cfg: PretrainedCfg | Mapping[str, Any] | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, PretrainedCfg):
        return cfg.to_dict()
    return dict(cfg)


def _model_in_chans(model: nn.Module | None, cfg: Mapping[str, Any]) -> int | None:
    """Input channels of a model: its ``in_chans`` or the first conv's weight (cfg ``first_conv``)."""
    if model is None:
        return None
    if isinstance(getattr(model, "in_chans", None), int):
        return model.in_chans
    first = cfg.get("first_conv")
    first = first[0] if isinstance(first, (list, tuple)) else first
    try:
        weight = model.get_submodule(first).weight if first else None
    except AttributeError:
        return None
    # a conv's input channels; a linear patch embedding's width is patch area x channels, not channels
    return int(weight.shape[1]) if weight is not None and weight.dim() >= 3 else None


def resolve_data_config(
    args: Mapping[str, Any] | None = None,
    pretrained_cfg: PretrainedCfg | Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Data config from explicit ``args`` (highest priority), then the cfg, then defaults.

    ``args`` may hold ``input_size`` or ``img_size``, ``in_chans``, ``interpolation``, ``mean``,
    ``std``, ``crop_pct``, ``crop_mode``; ``None`` values are ignored. ``use_test_size`` picks the
    cfg's ``test_input_size`` / ``test_crop_pct`` where given. The channel count follows the
    model's ``in_chans`` when ``mean``/``std`` must be broadcast to another number of channels.
    """
    if args is not None and not isinstance(args, Mapping):
        args = vars(args)  # an argparse.Namespace
    args = {k: v for k, v in dict(args or {}).items() if v is not None}
    if pretrained_cfg is None and model is not None:
        pretrained_cfg = getattr(model, "pretrained_cfg", None)
    cfg = _cfg_dict(pretrained_cfg)
    out: dict[str, Any] = {}
    in_chans = args.get("in_chans") or _model_in_chans(model, cfg) or 3
    if "input_size" in args:
        input_size = tuple(args["input_size"])
    elif "img_size" in args:
        s = args["img_size"]
        input_size = (in_chans, s, s) if isinstance(s, int) else (in_chans, *s)
    elif use_test_size and cfg.get("test_input_size"):
        input_size = tuple(cfg["test_input_size"])
    else:
        input_size = tuple(cfg.get("input_size") or _DEFAULTS["input_size"])
    out["input_size"] = (in_chans, *input_size[1:])
    for key in ("interpolation", "crop_mode"):
        out[key] = args.get(key, cfg.get(key) or _DEFAULTS[key])
    if "crop_pct" in args:
        out["crop_pct"] = float(args["crop_pct"])
    elif use_test_size and cfg.get("test_crop_pct"):
        out["crop_pct"] = float(cfg["test_crop_pct"])
    else:
        out["crop_pct"] = float(cfg.get("crop_pct") or _DEFAULTS["crop_pct"])
    for key in ("mean", "std"):
        val = tuple(args.get(key, cfg.get(key) or _DEFAULTS[key]))
        if len(val) == 1:
            val = val * in_chans
        elif len(val) != in_chans:
            val = (sum(val) / len(val),) * in_chans  # e.g. RGB stats for a 1- or 5-channel model
        out[key] = val
    if verbose:
        print("data config:", ", ".join(f"{k}={v}" for k, v in out.items()))
    return out


def resolve_model_data_config(model: nn.Module, args: Mapping[str, Any] | None = None,
                              pretrained_cfg: PretrainedCfg | Mapping[str, Any] | None = None,
                              use_test_size: bool = False, verbose: bool = False) -> dict[str, Any]:
    """:func:`resolve_data_config` for a model instance (its ``pretrained_cfg`` unless one is given)."""
    return resolve_data_config(args, pretrained_cfg=pretrained_cfg, model=model, use_test_size=use_test_size,
                               verbose=verbose)
