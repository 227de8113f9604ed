"""Model families, one module each. Modules are imported on demand by the registry."""
from __future__ import annotations

import importlib
from typing import Any

# the reference's ``timm.models`` helpers, imported on first use (family modules stay lazy)
_EXPORTS: dict[str, str] = {
    "create_model": "visionzoo.factory",
    "list_models": "visionzoo.registry",
    "list_pretrained": "visionzoo.registry",
    "list_modules": "visionzoo.registry",
    "is_model": "visionzoo.registry",
    "is_model_pretrained": "visionzoo.registry",
    "is_model_in_modules": "visionzoo.registry",
    "model_entrypoint": "visionzoo.registry",
    "get_pretrained_cfg": "visionzoo.registry",
    "get_pretrained_cfg_value": "visionzoo.registry",
    "get_arch_pretrained_cfgs": "visionzoo.registry",
    "get_arch_name": "visionzoo.registry",
    "split_model_name_tag": "visionzoo.registry",
    "register_model": "visionzoo.registry",
    "load_checkpoint": "visionzoo.pretrained.load",
    "resume_checkpoint": "visionzoo.pretrained.load",
    "PretrainedCfg": "visionzoo.pretrained.cfg",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # AttributeError lets ``from visionzoo.models import resnet`` import the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
