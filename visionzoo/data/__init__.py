"""Data: config resolved from a model's pretrained cfg, PIL/torch transforms, class names, images."""
from __future__ import annotations


from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
