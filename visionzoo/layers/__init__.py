"""Building blocks shared by the model families; each block is defined once, here.

The names below are imported from their submodule on first use (PEP 562): ``import visionzoo.layers``
or importing one submodule (``visionzoo.layers.config``) does not load every layer, and code that
never builds a model never imports torch through this package.
"""
from __future__ import annotations


from .._lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "create_act_layer": "activations",
    "get_act_layer": "activations",
    "is_exportable": "config",
    "is_no_jit": "config",
    "is_scriptable": "config",
    "set_layer_config": "config",
    "set_scriptable": "config",
    "set_exportable": "config",
    "set_no_jit": "config",
    "FrozenBatchNorm2d": "frozen_bn",
    "FrozenBatchNormAct2d": "frozen_bn",
    "freeze_batch_norm_2d": "frozen_bn",
    "unfreeze_batch_norm_2d": "frozen_bn",
    "use_fused_attn": "config",
    "ConvNormAct": "conv_norm_act",
    "DropBlock2d": "drop",
    "DropPath": "drop",
    "drop_path": "drop",
    "make_divisible": "helpers",
    "to_2tuple": "helpers",
    "to_ntuple": "helpers",
    "GluMlp": "mlp",
    "Mlp": "mlp",
    "SwiGLU": "mlp",
    "GroupNorm": "norm",
    "GroupNorm1": "norm",
    "LayerNorm": "norm",
    "LayerNorm2d": "norm",
    "get_norm_layer": "norm",
    "Conv2dSame": "padding",
    "create_conv2d_pad": "padding",
    "get_padding": "padding",
    "resolve_padding": "padding",
    "pad_to_same": "padding",
    "ClassifierHead": "pool",
    "NormMlpClassifierHead": "pool",
    "SelectAdaptivePool2d": "pool",
    "create_classifier": "pool",
    "EcaModule": "squeeze_excite",
    "EffectiveSEModule": "squeeze_excite",
    "SEModule": "squeeze_excite",
    "create_attn": "squeeze_excite",
    "get_attn": "squeeze_excite",
    "trunc_normal_": "weight_init",
    "variance_scaling_": "weight_init",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
