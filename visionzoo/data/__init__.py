"""Data: config resolved from a model's pretrained cfg, PIL/torch transforms, class names, images."""
from __future__ import annotations

import importlib
from typing import Any

# public name -> module defining it (imported on first use; the reference's ``timm.data`` names)
_EXPORTS: dict[str, str] = {
    "resolve_data_config": "visionzoo.data.config",
    "resolve_model_data_config": "visionzoo.data.config",
    "create_transform": "visionzoo.data.transforms",
    "IMAGENET_DEFAULT_MEAN": "visionzoo.pretrained.cfg",
    "IMAGENET_DEFAULT_STD": "visionzoo.pretrained.cfg",
    "IMAGENET_INCEPTION_MEAN": "visionzoo.pretrained.cfg",
    "IMAGENET_INCEPTION_STD": "visionzoo.pretrained.cfg",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
