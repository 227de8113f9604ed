"""Model families, one module each. Modules are imported on demand by the registry."""
from __future__ import annotations


from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
