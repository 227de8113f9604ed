"""visionzoo: image-model backbones with timm-compatible names, weights and outputs.

The public API is small; everything is imported lazily so ``import visionzoo`` stays cheap:

* models: :func:`create_model`, :func:`list_models`, :func:`list_pretrained`, :func:`list_modules`,
  :func:`is_model`, :func:`model_entrypoint`, :func:`get_pretrained_cfg`, :func:`register_model`
* weights: :func:`load_checkpoint`, :class:`PretrainedCfg`
* sharing: :func:`save_pretrained` (hub-layout folder), :func:`push_to_hub`; load with
  ``create_model("local-dir:PATH")`` / ``create_model("hf-hub:org/name")``
* data: :func:`resolve_data_config`, :func:`resolve_model_data_config`, :func:`create_transform`
* layer flags: :func:`set_layer_config`, :func:`set_scriptable` / :func:`set_exportable` /
  :func:`set_no_jit` and their ``is_*`` getters; :func:`freeze_batch_norm_2d`
* tools: :func:`optimize` (fast CPU inference; ``backend='onnxruntime'``), :func:`quantize` (int8
  through ONNX Runtime, calibrated on your images), :func:`benchmark`, :func:`select` (model choice),
  :func:`embed` (image folders -> embedding files; search them with :mod:`visionzoo.embeddings`)
"""
from __future__ import annotations


from ._lazy import lazy_exports

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
    "get_pretrained_cfg_value": "visionzoo.registry",
    "get_arch_pretrained_cfgs": "visionzoo.registry",
    "split_model_name_tag": "visionzoo.registry",
    "is_model_pretrained": "visionzoo.registry",
    "load_checkpoint": "visionzoo.pretrained.load",
    "resume_checkpoint": "visionzoo.pretrained.load",
    "PretrainedCfg": "visionzoo.pretrained.cfg",
    "save_pretrained": "visionzoo.pretrained.hub",
    "push_to_hub": "visionzoo.pretrained.hub",
    "resolve_data_config": "visionzoo.data.config",
    "resolve_model_data_config": "visionzoo.data.config",
    "create_transform": "visionzoo.data.transforms",
    "set_layer_config": "visionzoo.layers.config",
    "set_scriptable": "visionzoo.layers.config",
    "set_exportable": "visionzoo.layers.config",
    "set_no_jit": "visionzoo.layers.config",
    "is_scriptable": "visionzoo.layers.config",
    "is_exportable": "visionzoo.layers.config",
    "is_no_jit": "visionzoo.layers.config",
    "freeze_batch_norm_2d": "visionzoo.layers.frozen_bn",
    "unfreeze_batch_norm_2d": "visionzoo.layers.frozen_bn",
    "FrozenBatchNorm2d": "visionzoo.layers.frozen_bn",
    "FrozenBatchNormAct2d": "visionzoo.layers.frozen_bn",
    "FeatureListNet": "visionzoo.features",
    "FeatureInfo": "visionzoo.features",
    "optimize": "visionzoo.inference",
    "quantize": "visionzoo.deploy.onnxrt",
    "benchmark": "visionzoo.bench.measure",
    "select": "visionzoo.bench.select",
    "embed": "visionzoo.embeddings.run",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
