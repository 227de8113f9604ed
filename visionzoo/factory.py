"""``create_model``: the single entry point from a name to a ready model."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import torch.nn as nn

from .layers.config import set_layer_config
from .pretrained.cfg import PretrainedCfg
from .pretrained.load import load_checkpoint
from .pretrained.sources import hub_cache_dir
from .registry import get_pretrained_cfg, model_entrypoint, split_model_name_tag

__all__ = ["create_model", "parse_model_name"]

# generic arguments whose None means "use the model's default"
_NONE_MEANS_DEFAULT = ("num_classes", "in_chans", "global_pool", "drop_rate", "drop_path_rate", "img_size",
                       "out_indices", "output_stride")


def parse_model_name(model_name: str) -> tuple[str, str]:
    """Split ``'hf-hub:org/repo'``, ``'local-dir:PATH'`` or ``'visionzoo:arch'`` into (source, name)."""
    if model_name.startswith("hf-hub:") or model_name.startswith("hf_hub:"):
        return "hf-hub", model_name.split(":", 1)[1]
    if model_name.startswith("local-dir:"):
        return "local-dir", model_name.split(":", 1)[1]
    if model_name.startswith("visionzoo:") or model_name.startswith("timm:"):
        return "", model_name.split(":", 1)[1]
    return "", model_name


def _hub_config(repo_id: str, cache_dir: str | os.PathLike | None) -> dict[str, Any]:
    """Read ``config.json`` of a hub repo published in timm's layout."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, "config.json", cache_dir=hub_cache_dir(cache_dir))
    except Exception as e:
        raise RuntimeError(f"cannot read config.json of hub repo {repo_id!r}: {type(e).__name__}: {e}") from e
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _shared_model_cfg(source: str, name: str, cache_dir: str | os.PathLike | None
                      ) -> tuple[str, PretrainedCfg, dict[str, Any], dict[str, Any] | None]:
    """``(architecture, cfg, model_args, visionzoo head)`` of a hub repo or a local hub-layout folder.

    The cfg is used as is (not merged onto the architecture's default tag), so its only weight
    source is the repo or the folder.
    """
    from .pretrained.hub import HEAD_KEY, cfg_from_hub_config, read_local_dir

    if source == "hf-hub":
        config = _hub_config(name, cache_dir)
        arch, cfg, model_args = cfg_from_hub_config(config, f"hub repo {name!r}", hf_hub_id=name)
    else:
        config, weights = read_local_dir(name)
        arch, cfg, model_args = cfg_from_hub_config(config, f"local-dir {name!r}", file=str(weights or ""),
                                                    hf_hub_id=None, url=None)
        cfg["file"] = cfg["file"] or None
    record = PretrainedCfg.from_dict(cfg)
    record.architecture = arch
    return arch, record, model_args, config.get(HEAD_KEY)


def _create_with_head(entrypoint: Any, head: Mapping[str, Any], pretrained: bool, cfg: PretrainedCfg,
                      extra: dict[str, Any], kwargs: dict[str, Any]) -> nn.Module:
    """A ``visionzoo train --head mlp`` model: backbone (no classifier) + MLP head, weights loaded whole."""
    from .pretrained.load import clean_state_dict, load_into_model, load_state_dict_file
    from .pretrained.sources import resolve_weights_file
    from .train.model import MlpHeadClassifier

    if head.get("type") != "mlp":
        raise ValueError(f"unknown visionzoo_head type {head.get('type')!r} in {cfg.architecture}'s config.json")
    num_classes = kwargs.pop("num_classes", cfg.num_classes)
    backbone = entrypoint(pretrained=False, **extra, **kwargs, num_classes=0)
    model = MlpHeadClassifier(backbone, num_classes, int(head.get("hidden", 512)), float(head.get("dropout", 0.2)))
    if pretrained:
        path = resolve_weights_file(cfg, cache_dir=extra.get("cache_dir"))
        load_into_model(model, clean_state_dict(load_state_dict_file(path)), name=f"weights {path}")
    return model


def _check_count(kwargs: dict[str, Any], name: str, minimum: int) -> None:
    """``kwargs[name]`` (if given) must be an integer >= ``minimum``; numpy ints become ``int``."""
    if name not in kwargs:
        return
    value = kwargs[name]
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    value = int(value.__index__())
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    kwargs[name] = value


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg: PretrainedCfg | Mapping[str, Any] | str | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    scriptable: bool | None = None,
    exportable: bool | None = None,
    no_jit: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a model by architecture name, optionally with pretrained weights.

    Args:
        model_name: ``'resnet50'``, ``'resnet50.a1_in1k'`` (weight tag), ``'hf-hub:org/repo'``
            (config and weights from a Hugging Face Hub repo) or ``'local-dir:PATH'`` (the same
            layout in a local folder, e.g. one written by :func:`visionzoo.save_pretrained` or a
            ``visionzoo train`` run folder); see docs/sharing.md.
        pretrained: load the tag's (or default tag's) weights; for ``hf-hub:`` / ``local-dir:``
            the repo's or folder's weights.
        pretrained_cfg: a cfg object/dict or tag name replacing the default.
        pretrained_cfg_overlay: keys replaced in the cfg, e.g. ``dict(file='weights.safetensors')``.
        checkpoint_path: a local checkpoint loaded after creation (training checkpoints with
            ``state_dict``/``model`` keys and ``module.`` prefixes are accepted).
        cache_dir: where downloads are cached (default ``$VISIONZOO_CACHE`` or ``~/.cache/visionzoo``).
        scriptable, exportable, no_jit: layer flags for TorchScript/ONNX friendly variants.
        **kwargs: passed to the model: ``num_classes``, ``in_chans``, ``global_pool``,
            ``drop_rate``, ``drop_path_rate``, ``features_only``, ``out_indices``, family options.

    Raises:
        RuntimeError: unknown model (with suggestions). ValueError: unknown tag, or ``num_classes``
        / ``in_chans`` not an integer >= 0 / >= 1. TypeError: ``model_name`` not a str, or an
        argument the model does not accept.
    """
    if not isinstance(model_name, str):
        raise TypeError(f"model_name must be a str such as 'resnet50' or 'resnet50.a1_in1k', "
                        f"got {type(model_name).__name__} {model_name!r}")
    kwargs = {k: v for k, v in kwargs.items() if not (k in _NONE_MEANS_DEFAULT and v is None)}
    _check_count(kwargs, "num_classes", 0)
    _check_count(kwargs, "in_chans", 1)
    source, name = parse_model_name(model_name)
    head = None
    if source:
        try:
            model_name, pretrained_cfg, model_args, head = _shared_model_cfg(source, name, cache_dir)
        except ValueError as e:
            raise RuntimeError(str(e)) from e
        for k, v in model_args.items():
            kwargs.setdefault(k, v)
    arch, tag = split_model_name_tag(model_name)
    entrypoint = model_entrypoint(arch)
    if tag and pretrained_cfg is None:
        pretrained_cfg = get_pretrained_cfg(model_name)
    extra: dict[str, Any] = {}
    if pretrained_cfg is not None:
        extra["pretrained_cfg"] = pretrained_cfg
    if pretrained_cfg_overlay:
        extra["pretrained_cfg_overlay"] = pretrained_cfg_overlay
    if cache_dir is not None:
        extra["cache_dir"] = cache_dir
    with set_layer_config(scriptable=scriptable, exportable=exportable, no_jit=no_jit):
        if head:
            model = _create_with_head(entrypoint, head, pretrained, pretrained_cfg, extra, kwargs)
        else:
            model = entrypoint(pretrained=pretrained, **extra, **kwargs)
    if checkpoint_path:
        load_checkpoint(model, checkpoint_path)
    return model
