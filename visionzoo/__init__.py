"""visionzoo: image-model backbones with timm-compatible names, weights and outputs.

The public API is small; everything is imported lazily so ``import visionzoo`` stays cheap:

* models: :func:`create_model`, :func:`list_models`, :func:`list_pretrained`, :func:`list_modules`,
  :func:`is_model`, :func:`model_entrypoint`, :func:`get_pretrained_cfg`, :func:`register_model`
* weights: :func:`load_checkpoint`, :class:`PretrainedCfg`
* data: :func:`resolve_data_config`, :func:`resolve_model_data_config`, :func:`create_transform`
* layer flags: :func:`set_layer_config`
* tools: :func:`optimize` (fast CPU inference), :func:`benchmark`, :func:`select` (model choice)
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "visionzoo.factory",
    "list_models": "visionzoo.registry",
    "list_pretrained": "visionzoo.registry",
    "list_modules": "visionzoo.registry",
    "is_model": "visionzoo.registry",
    "model_entrypoint": "visionzoo.registry",
    "get_pretrained_cfg": "visionzoo.registry",
    "register_model": "visionzoo.registry",
    "load_checkpoint": "visionzoo.pretrained.load",
    "PretrainedCfg": "visionzoo.pretrained.cfg",
    "resolve_data_config": "visionzoo.data.config",
    "resolve_model_data_config": "visionzoo.data.config",
    "create_transform": "visionzoo.data.transforms",
    "set_layer_config": "visionzoo.layers.config",
    "FeatureListNet": "visionzoo.features",
    "optimize": "visionzoo.inference",
    "benchmark": "visionzoo.bench.measure",
    "select": "visionzoo.bench.select",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'visionzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
