"""MobileNetV3 (Howard et al., 2019, https://arxiv.org/abs/1905.02244) and the networks sharing
its "pool first, then a wide 1x1 conv" head: FBNetV3 (Dai et al., 2020,
https://arxiv.org/abs/2006.02049), PP-LCNet (Cui et al., 2021, https://arxiv.org/abs/2109.15099)
and MobileNetV4 (Qin et al., 2024, https://arxiv.org/abs/2404.10518, conv and hybrid).

Layout: ``conv_stem -> bn1 -> blocks -> global_pool -> conv_head -> (norm_head) -> act -> classifier``.
Pooling before ``conv_head`` is the MobileNetV3 trick that makes the 1280-wide head almost free;
``num_features`` is therefore the last block's width and ``head_hidden_size`` the head's.
The blocks come from the shared mobile-block builder (see ``_mobile_builder``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.padding import create_conv2d_pad
from ..layers.pool import SelectAdaptivePool2d
from .base import Variant, register_family
from ._mobile_builder import MobileArch, MobileNetBase, SeCfg
from ._mobile_memory import apply_memory_efficient
from .efficientnet import init_weights

__all__ = ["MobileNetV3", "VARIANTS"]


class MobileNetV3(MobileNetBase):
    """Mobile-block backbone with a pooled 1x1-conv head (MobileNetV3 layout).

    Args:
        arch: the architecture (block definitions, multipliers, layer choices).
        act_layer, norm_layer, pad_type, aa_layer: override the architecture's choices.
        memory_efficient: training-memory mode: ``True``/``"block"`` keeps only conv outputs inside
            blocks and recomputes norms/activations/SE in backward (~0.4x peak, ~1.1x step on
            EfficientNet-B0); ``"act"`` fuses each batch norm with a memory-efficient activation
            (~0.7x, ~1.0x); ``"inplace"`` only does safe in-place ops.
    """
    feature_cfg = {"feature_cls": "MobileNetV3Features", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, arch: MobileArch, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, output_stride: int = 32,
                 act_layer: str | None = None, norm_layer: str | None = None, pad_type: str | None = None,
                 aa_layer: str | None = None, memory_efficient: bool | str = False) -> None:
        super().__init__()
        arch, env = self._setup(arch, num_classes, drop_rate, act=act_layer, norm=norm_layer, pad=pad_type,
                                aa=aa_layer)
        self.num_features = self._build_trunk(arch, in_chans, output_stride, drop_path_rate, env)
        self.head_hidden_size = arch.head_chs
        self.global_pool = SelectAdaptivePool2d(global_pool)
        in_head = self.num_features * self.global_pool.feat_mult()
        self.conv_head: nn.Module = create_conv2d_pad(in_head, self.head_hidden_size, 1, padding=arch.pad,
                                                      bias=arch.head_bias)
        if arch.head_norm:
            self.norm_head: nn.Module = env.norm_act(self.head_hidden_size, act_layer=env.act_layer)
            self.act2: nn.Module = nn.Identity()
        else:
            self.norm_head, self.act2 = nn.Identity(), env.act_layer()
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = self._make_classifier(num_classes)
        init_weights(self)
        if memory_efficient:
            apply_memory_efficient(self, memory_efficient)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool)
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = self._make_classifier(num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.flatten(self.act2(self.norm_head(self.conv_head(x))))
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    def _prune_head(self) -> None:
        self.conv_head, self.norm_head, self.act2 = nn.Identity(), nn.Identity(), nn.Identity()
        self.head_hidden_size = self.num_features
        self.reset_classifier(0, "")


# --------------------------------------------------------------------------------------------
# architectures

_SE = "se0.25"
# MobileNetV3 SE: reduce the expanded width by 4 (rounded to 8), ReLU inside, hard-sigmoid gate
_SE_V3 = SeCfg(gate="hard_sigmoid", act="relu", from_mid=True, divisor=8)

_V3_LARGE = (
    ("ds k3 c16 relu",),
    ("ir k3 s2 e4 c24 relu", "ir k3 e3 c24 relu"),
    (f"ir x3 k5 s2 e3 c40 {_SE} relu",),
    ("ir k3 s2 e6 c80", "ir k3 e2.5 c80", "ir x2 k3 e2.3 c80"),
    (f"ir x2 k3 e6 c112 {_SE}",),
    (f"ir x3 k5 s2 e6 c160 {_SE}",),
    ("cn k1 c960",),
)
# the timm-trained variant: no shortcut around the first block
_V3_LARGE_RW = (("ds k3 c16 relu noskip",),) + _V3_LARGE[1:]
_V3_SMALL = (
    (f"ds k3 s2 c16 {_SE} relu",),
    ("ir k3 s2 e4.5 c24 relu", "ir k3 e3.67 c24 relu"),
    (f"ir k5 s2 e4 c40 {_SE}", f"ir x2 k5 e6 c40 {_SE}"),
    (f"ir x2 k5 e3 c48 {_SE}",),
    (f"ir x3 k5 s2 e6 c96 {_SE}",),
    ("cn k1 c576",),
)
# "minimal": no SE, no hard-swish, 3x3 kernels only (friendlier to simple accelerators)
_V3_LARGE_MIN = (
    ("ds k3 c16",),
    ("ir k3 s2 e4 c24", "ir k3 e3 c24"),
    ("ir x3 k3 s2 e3 c40",),
    ("ir k3 s2 e6 c80", "ir k3 e2.5 c80", "ir x2 k3 e2.3 c80"),
    ("ir x2 k3 e6 c112",),
    ("ir x3 k3 s2 e6 c160",),
    ("cn k1 c960",),
)
_V3_SMALL_MIN = (
    ("ds k3 s2 c16",),
    ("ir k3 s2 e4.5 c24", "ir k3 e3.67 c24"),
    ("ir k3 s2 e4 c40", "ir x2 k3 e6 c40"),
    ("ir x2 k3 e3 c48",),
    ("ir x3 k3 s2 e6 c96",),
    ("cn k1 c576",),
)

_FBNETV3_B = (
    ("ds x2 k3 c16",),
    ("ir k5 s2 e4 c24", "ir x3 k5 e2 c24"),
    (f"ir k5 s2 e5 c40 {_SE}", f"ir x4 k5 e3 c40 {_SE}"),
    ("ir k5 s2 e5 c72", "ir x4 k3 e3 c72"),
    (f"ir k3 e5 c120 {_SE}", f"ir x5 k5 e3 c120 {_SE}"),
    (f"ir k3 s2 e6 c184 {_SE}", f"ir x5 k5 e4 c184 {_SE}", f"ir k5 e6 c224 {_SE}"),
    ("cn k1 c1344",),
)
_FBNETV3_D = (
    ("ds x2 k3 c16",),
    ("ir k3 s2 e5 c24", "ir x5 k3 e2 c24"),
    (f"ir k5 s2 e4 c40 {_SE}", f"ir x4 k3 e3 c40 {_SE}"),
    ("ir k3 s2 e5 c72", "ir x4 k3 e3 c72"),
    (f"ir k3 e5 c128 {_SE}", f"ir x6 k5 e3 c128 {_SE}"),
    (f"ir k3 s2 e6 c208 {_SE}", f"ir x5 k5 e5 c208 {_SE}", f"ir k5 e6 c240 {_SE}"),
    ("cn k1 c1440",),
)
_FBNETV3_G = (
    ("ds x3 k3 c24",),
    ("ir k5 s2 e4 c40", "ir x4 k5 e2 c40"),
    (f"ir k5 s2 e4 c56 {_SE}", f"ir x4 k5 e3 c56 {_SE}"),
    ("ir k5 s2 e5 c104", "ir x4 k3 e3 c104"),
    (f"ir k3 e5 c160 {_SE}", f"ir x8 k5 e3 c160 {_SE}"),
    (f"ir k3 s2 e6 c264 {_SE}", f"ir x6 k5 e5 c264 {_SE}", f"ir x2 k5 e6 c288 {_SE}"),
    ("cn k1 c1728",),
)
_LCNET = (
    ("dsa k3 c32 noskip",),
    ("dsa k3 s2 c64", "dsa k3 c64 noskip"),
    ("dsa k3 s2 c128", "dsa k3 c128 noskip"),
    ("dsa k3 s2 c256", "dsa k5 c256 noskip"),
    ("dsa x4 k5 c256 noskip",),
    (f"dsa k5 s2 c512 {_SE}", f"dsa k5 c512 {_SE} noskip"),
)

_V4_CONV_SMALL = (
    ("cn k3 s2 c32", "cn k1 c32"),
    ("cn k3 s2 c96", "cn k1 c64"),
    ("uir ks5 km5 s2 e3 c96", "uir x4 ks0 km3 e2 c96", "uir ks3 km0 e4 c96"),
    ("uir ks3 km3 s2 e6 c128", "uir ks5 km5 e4 c128", "uir ks0 km5 e4 c128", "uir ks0 km5 e3 c128",
     "uir x2 ks0 km3 e4 c128"),
    ("cn k1 c960",),
)
_V4_CONV_MEDIUM = (
    ("er k3 s2 e4 c48",),
    ("uir ks3 km5 s2 e4 c80", "uir ks3 km3 e2 c80"),
    ("uir ks3 km5 s2 e6 c160", "uir x2 ks3 km3 e4 c160", "uir ks3 km5 e4 c160", "uir ks3 km3 e4 c160",
     "uir ks3 km0 e4 c160", "uir ks0 km0 e2 c160", "uir ks3 km0 e4 c160"),
    ("uir ks5 km5 s2 e6 c256", "uir ks5 km5 e4 c256", "uir x2 ks3 km5 e4 c256", "uir ks0 km0 e4 c256",
     "uir ks3 km0 e4 c256", "uir ks3 km5 e2 c256", "uir ks5 km5 e4 c256", "uir x2 ks0 km0 e4 c256",
     "uir ks5 km0 e2 c256"),
    ("cn k1 c960",),
)
_V4_CONV_LARGE = (
    ("er k3 s2 e4 c48",),
    ("uir ks3 km5 s2 e4 c96", "uir ks3 km3 e4 c96"),
    ("uir ks3 km5 s2 e4 c192", "uir x3 ks3 km3 e4 c192", "uir ks3 km5 e4 c192", "uir x5 ks5 km3 e4 c192",
     "uir ks3 km0 e4 c192"),
    ("uir ks5 km5 s2 e4 c512", "uir x3 ks5 km5 e4 c512", "uir ks5 km0 e4 c512", "uir ks5 km3 e4 c512",
     "uir x2 ks5 km0 e4 c512", "uir ks5 km3 e4 c512", "uir ks5 km5 e4 c512", "uir x3 ks5 km0 e4 c512"),
    ("cn k1 c960",),
)
_MQA_M16, _MQA_M32 = "mqa h4 kd64 vd64 kv2 c160", "mqa h4 kd64 vd64 kv1 c256"
_V4_HYBRID_MEDIUM = (
    ("er k3 s2 e4 c48",),
    ("uir ks3 km5 s2 e4 c80", "uir ks3 km3 e2 c80"),
    ("uir ks3 km5 s2 e6 c160", "uir ks0 km0 e2 c160", "uir ks3 km3 e4 c160", "uir ks3 km5 e4 c160", _MQA_M16,
     "uir ks3 km3 e4 c160", _MQA_M16, "uir ks3 km0 e4 c160", _MQA_M16, "uir ks3 km3 e4 c160", _MQA_M16,
     "uir ks3 km0 e4 c160"),
    ("uir ks5 km5 s2 e6 c256", "uir ks5 km5 e4 c256", "uir x2 ks3 km5 e4 c256", "uir ks0 km0 e2 c256",
     "uir ks3 km5 e2 c256", "uir ks0 km0 e2 c256", "uir ks0 km0 e4 c256", _MQA_M32, "uir ks3 km0 e4 c256",
     _MQA_M32, "uir ks5 km5 e4 c256", _MQA_M32, "uir ks5 km0 e4 c256", _MQA_M32, "uir ks5 km0 e4 c256"),
    ("cn k1 c960",),
)
_MQA_L16, _MQA_L32 = "mqa h8 kd48 vd48 kv2 c192", "mqa h8 kd64 vd64 kv1 c512"
_V4_HYBRID_LARGE = (
    ("er k3 s2 e4 c48",),
    ("uir ks3 km5 s2 e4 c96", "uir ks3 km3 e4 c96"),
    ("uir ks3 km5 s2 e4 c192", "uir x3 ks3 km3 e4 c192", "uir ks3 km5 e4 c192", "uir x2 ks5 km3 e4 c192",
     _MQA_L16, "uir ks5 km3 e4 c192", _MQA_L16, "uir ks5 km3 e4 c192", _MQA_L16, "uir ks5 km3 e4 c192",
     _MQA_L16, "uir ks3 km0 e4 c192"),
    ("uir ks5 km5 s2 e4 c512", "uir x3 ks5 km5 e4 c512", "uir ks5 km0 e4 c512", "uir ks5 km3 e4 c512",
     "uir x2 ks5 km0 e4 c512", "uir ks5 km3 e4 c512", "uir ks5 km5 e4 c512", _MQA_L32, "uir ks5 km0 e4 c512",
     _MQA_L32, "uir ks5 km0 e4 c512", _MQA_L32, "uir ks5 km0 e4 c512", _MQA_L32, "uir ks5 km0 e4 c512"),
    ("cn k1 c960",),
)

_TF = dict(pad="same", norm_eps=1e-3)


def _v3(blocks: tuple, w: float, d: float = 1.0, head: int = 1280, **kw: Any) -> MobileArch:
    kw.setdefault("se", _SE_V3)
    kw.setdefault("act", "hard_swish")
    # narrow models keep a 16-wide stem (8 channels lose too much at full resolution)
    return MobileArch(blocks, width=w, depth=d, stem_size=16, fix_stem=w < 0.75, head_size=head, head_rule="fixed",
                      mid_divisor=8, **kw)


def _fbnetv3(blocks: tuple, stem: int) -> MobileArch:
    se = SeCfg(gate="hard_sigmoid", divisor=8, round_limit=0.95)
    return MobileArch(blocks, stem_size=stem, head_size=1984, head_rule="fixed", head_bias=False, mid_divisor=8,
                      act="hard_swish", se=se)


def _lcnet(w: float) -> MobileArch:
    se = SeCfg(gate="hard_sigmoid", act="relu")
    return MobileArch(_LCNET, width=w, stem_size=16, head_size=1280, head_rule="fixed", act="hard_swish", se=se)


def _v4(blocks: tuple, w: float = 1.0, stem: int = 32, hybrid: bool = False, **kw: Any) -> MobileArch:
    kw.setdefault("act", "relu")
    return MobileArch(blocks, width=w, stem_size=stem, fix_stem=True, head_size=1280, head_rule="fixed",
                      head_bias=False, head_norm=True, mid_divisor=8, layer_scale=1e-5 if hybrid else None, **kw)


_ARCHS: dict[str, MobileArch] = {
    "fbnetv3_b": _fbnetv3(_FBNETV3_B, 16),
    "fbnetv3_d": _fbnetv3(_FBNETV3_D, 24),
    "fbnetv3_g": _fbnetv3(_FBNETV3_G, 32),
    "lcnet_035": _lcnet(0.35),
    "lcnet_050": _lcnet(0.5),
    "lcnet_075": _lcnet(0.75),
    "lcnet_100": _lcnet(1.0),
    "lcnet_150": _lcnet(1.5),
    "mobilenetv3_large_075": _v3(_V3_LARGE, 0.75),
    "mobilenetv3_large_100": _v3(_V3_LARGE, 1.0),
    "mobilenetv3_large_150d": _v3(_V3_LARGE, 1.5, 1.2),
    "mobilenetv3_rw": _v3(_V3_LARGE_RW, 1.0, head_bias=False, norm_eps=1e-3, se=SeCfg(gate="hard_sigmoid", from_mid=True)),
    "mobilenetv3_small_050": _v3(_V3_SMALL, 0.5, head=1024),
    "mobilenetv3_small_075": _v3(_V3_SMALL, 0.75, head=1024),
    "mobilenetv3_small_100": _v3(_V3_SMALL, 1.0, head=1024),
    "mobilenetv4_conv_aa_large": _v4(_V4_CONV_LARGE, stem=24, aa="avg"),
    "mobilenetv4_conv_aa_medium": _v4(_V4_CONV_MEDIUM, aa="avg"),
    "mobilenetv4_conv_blur_medium": _v4(_V4_CONV_MEDIUM, aa="blurpc"),
    "mobilenetv4_conv_large": _v4(_V4_CONV_LARGE, stem=24),
    "mobilenetv4_conv_medium": _v4(_V4_CONV_MEDIUM),
    "mobilenetv4_conv_small": _v4(_V4_CONV_SMALL),
    "mobilenetv4_conv_small_035": _v4(_V4_CONV_SMALL, 0.35),
    "mobilenetv4_conv_small_050": _v4(_V4_CONV_SMALL, 0.5),
    "mobilenetv4_hybrid_large": _v4(_V4_HYBRID_LARGE, stem=24, hybrid=True, act="gelu"),
    "mobilenetv4_hybrid_large_075": _v4(_V4_HYBRID_LARGE, 0.75, stem=24, hybrid=True, act="gelu"),
    "mobilenetv4_hybrid_medium": _v4(_V4_HYBRID_MEDIUM, hybrid=True),
    "mobilenetv4_hybrid_medium_075": _v4(_V4_HYBRID_MEDIUM, 0.75, hybrid=True),
    "tf_mobilenetv3_large_075": _v3(_V3_LARGE, 0.75, **_TF),
    "tf_mobilenetv3_large_100": _v3(_V3_LARGE, 1.0, **_TF),
    "tf_mobilenetv3_large_minimal_100": _v3(_V3_LARGE_MIN, 1.0, act="relu", **_TF),
    "tf_mobilenetv3_small_075": _v3(_V3_SMALL, 0.75, head=1024, **_TF),
    "tf_mobilenetv3_small_100": _v3(_V3_SMALL, 1.0, head=1024, **_TF),
    "tf_mobilenetv3_small_minimal_100": _v3(_V3_SMALL_MIN, 1.0, head=1024, act="relu", **_TF),
}


VARIANTS: dict[str, Variant] = {name: Variant(MobileNetV3, arch=arch) for name, arch in _ARCHS.items()}

register_family("mobilenetv3", VARIANTS)
