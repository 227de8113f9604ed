"""EfficientNet and its relatives: one model class over the mobile-block builder.

Covers EfficientNet B0-B8/L2 (Tan & Le, 2019, https://arxiv.org/abs/1905.11946) and its -Lite,
-EdgeTPU (S/M/L), -CondConv (Yang et al., 2019), -X/-H (Li et al., 2021), V2 (Tan & Le, 2021,
https://arxiv.org/abs/2104.00298) and pruned variants; MixNet (Tan & Le, 2019,
https://arxiv.org/abs/1907.09595), MnasNet (Tan et al., 2018), Single-Path NAS (Stamoulis et al.,
2019), FBNet-C (Wu et al., 2018), MobileNet V1/V2, MobileNet-EdgeTPU V1/V2, TinyNet (Han et al.,
2020, https://arxiv.org/abs/2010.14819).

Layout: ``conv_stem -> bn1 -> blocks (stages) -> conv_head -> bn2 -> pool -> classifier``. The
``tf_`` variants are ports of TensorFlow checkpoints: they use TF "SAME" padding and BN eps 1e-3
(with symmetric padding those weights lose accuracy).

Training memory: ``set_grad_checkpointing()`` recomputes each stage in backward;
``memory_efficient=True`` keeps only conv outputs inside each block and recomputes the
norm / activation / SE element-wise work in backward; ``memory_efficient="act"`` only fuses batch
norm with a memory-efficient activation (see ``_mobile_memory``; measured in
``benchmarks/results/memory_efficientnet.md``).
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

__all__ = ["EfficientNet", "VARIANTS"]


def init_weights(module: nn.Module) -> None:
    """TF EfficientNet init: fan-out normal convs, small uniform classifier, unit BN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.weight.shape[0] ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


class EfficientNet(MobileNetBase):
    """Mobile-block backbone with a 1x1 conv + norm head before pooling (EfficientNet layout).

    Args:
        arch: the architecture (block definitions, multipliers, layer choices).
        act_layer, norm_layer, pad_type, aa_layer: override the architecture's choices.
        memory_efficient: training-memory mode: ``True``/``"block"`` keeps only conv outputs inside
            blocks and recomputes norms/activations/SE in backward (~0.4x peak, ~1.1x step on
            EfficientNet-B0); ``"act"`` fuses each batch norm with a memory-efficient activation
            (~0.7x, ~1.0x); ``"inplace"`` only does safe in-place ops.
    """
    feature_cfg = {"feature_cls": "EfficientNetFeatures", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, arch: MobileArch, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, output_stride: int = 32,
                 act_layer: str | None = None, norm_layer: str | None = None, pad_type: str | None = None,
                 aa_layer: str | None = None, memory_efficient: bool | str = False) -> None:
        super().__init__()
        arch, env = self._setup(arch, num_classes, drop_rate, act=act_layer, norm=norm_layer, pad=pad_type,
                                aa=aa_layer)
        last = self._build_trunk(arch, in_chans, output_stride, drop_path_rate, env)
        head = arch.head_chs
        if head > 0:
            self.conv_head: nn.Module = create_conv2d_pad(last, head, 1, padding=arch.pad, bias=False)
            self.bn2: nn.Module = env.norm_act(head, act_layer=env.act_layer)
            self.num_features = head
        else:
            self.conv_head, self.bn2 = nn.Identity(), nn.Identity()
            self.num_features = last
        self.head_hidden_size = self.num_features
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.classifier = self._make_classifier(num_classes)
        init_weights(self)
        if memory_efficient:
            apply_memory_efficient(self, memory_efficient)

    def _make_classifier(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        return nn.Linear(self.num_features * self.global_pool.feat_mult(), num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.classifier = self._make_classifier(num_classes)

    def _forward_head_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def _prune_head(self) -> None:
        self.conv_head, self.bn2 = nn.Identity(), nn.Identity()
        self.reset_classifier(0, "")


# --------------------------------------------------------------------------------------------
# architectures

_SE = "se0.25"


def _effnet_blocks(se: str = _SE, cc: str = "") -> tuple[tuple[str, ...], ...]:
    """EfficientNet-B0 (the MnasNet-searched baseline); ``cc`` turns the last 3 stages into CondConv."""
    late = f"cc {cc}" if cc else "ir"
    return (
        (f"ds k3 c16 {se}",),
        (f"ir x2 k3 s2 e6 c24 {se}",),
        (f"ir x2 k5 s2 e6 c40 {se}",),
        (f"ir x3 k3 s2 e6 c80 {se}",),
        (f"{late} x3 k5 e6 c112 {se}",),
        (f"{late} x4 k5 s2 e6 c192 {se}",),
        (f"{late} k3 e6 c320 {se}",),
    )


_B0 = _effnet_blocks()
_LITE = _effnet_blocks(se="")

_EDGE = (  # EfficientNet-EdgeTPU: fused (edge) residuals early, no SE, ReLU
    ("er k3 e4 c24 fc24 noskip",),
    ("er x2 k3 s2 e8 c32",),
    ("er x4 k3 s2 e8 c48",),
    ("ir x5 k5 s2 e8 c96",),
    ("ir x4 k5 e8 c144",),
    ("ir x2 k5 s2 e8 c192",),
)


def _effnet_x_blocks(early_exp: int) -> tuple[tuple[str, ...], ...]:
    """EfficientNet-X: space-to-depth first stage, ReLU fused residuals in stages 1-2, SE everywhere."""
    return (
        (f"ds k3 s2 c16 {_SE} s2d",),
        (f"er x2 k3 e{early_exp} c24 fc16 {_SE} relu",),
        (f"er x2 k5 s2 e{early_exp} c40 {_SE} relu",),
        (f"ir x3 k3 s2 e{early_exp} c80 {_SE}",),
        (f"ir x3 k5 e6 c112 {_SE}",),
        (f"ir x4 k5 s2 e6 c192 {_SE}",),
        (f"ir k3 e6 c320 {_SE}",),
    )


_V2_BASE = (  # EfficientNetV2-B0..B3
    ("cn k3 c16 skip",),
    ("er x2 k3 s2 e4 c32",),
    ("er x2 k3 s2 e4 c48",),
    (f"ir x3 k3 s2 e4 c96 {_SE}",),
    (f"ir x5 k3 e6 c112 {_SE}",),
    (f"ir x8 k3 s2 e6 c192 {_SE}",),
)


def _v2_blocks(chs: tuple[int, ...], depths: tuple[int, ...], rw: bool = False) -> tuple[tuple[str, ...], ...]:
    """EfficientNetV2-S/M/L/XL layout; ``rw`` = the timm-trained variant (edge first stage)."""
    first = f"er x{depths[0]} k3 e1 c{chs[0]}" if rw else f"cn x{depths[0]} k3 c{chs[0]} skip"
    stages = [(first,), (f"er x{depths[1]} k3 s2 e4 c{chs[1]}",), (f"er x{depths[2]} k3 s2 e4 c{chs[2]}",),
              (f"ir x{depths[3]} k3 s2 e4 c{chs[3]} {_SE}",), (f"ir x{depths[4]} k3 e6 c{chs[4]} {_SE}",),
              (f"ir x{depths[5]} k3 s2 e6 c{chs[5]} {_SE}",)]
    if len(chs) > 6:
        stages.append((f"ir x{depths[6]} k3 e6 c{chs[6]} {_SE}",))
    return tuple(stages)


_V2_S = _v2_blocks((24, 48, 64, 128, 160, 256), (2, 4, 4, 6, 9, 15))
_V2_S_RW = _v2_blocks((24, 48, 64, 128, 160, 272), (2, 4, 4, 6, 9, 15), rw=True)
_V2_M = _v2_blocks((24, 48, 80, 160, 176, 304, 512), (3, 5, 5, 7, 14, 18, 5))
_V2_L = _v2_blocks((32, 64, 96, 192, 224, 384, 640), (4, 7, 7, 10, 19, 25, 7))
_V2_XL = _v2_blocks((32, 64, 96, 192, 256, 512, 640), (4, 8, 8, 16, 24, 32, 8))

_MIXNET_S = (
    ("ds k3 c16",),
    ("ir k3 ek1.1 pk1.1 s2 e6 c24", "ir k3 ek1.1 pk1.1 e3 c24"),
    ("ir k3.5.7 s2 e6 c40 se0.5 swish", "ir x3 k3.5 ek1.1 pk1.1 e6 c40 se0.5 swish"),
    ("ir k3.5.7 pk1.1 s2 e6 c80 se0.25 swish", "ir x2 k3.5 pk1.1 e6 c80 se0.25 swish"),
    ("ir k3.5.7 ek1.1 pk1.1 e6 c120 se0.5 swish", "ir x2 k3.5.7.9 ek1.1 pk1.1 e3 c120 se0.5 swish"),
    ("ir k3.5.7.9.11 s2 e6 c200 se0.5 swish", "ir x2 k3.5.7.9 pk1.1 e6 c200 se0.5 swish"),
)
_MIXNET_M = (
    ("ds k3 c24",),
    ("ir k3.5.7 ek1.1 pk1.1 s2 e6 c32", "ir k3 ek1.1 pk1.1 e3 c32"),
    ("ir k3.5.7.9 s2 e6 c40 se0.5 swish", "ir x3 k3.5 ek1.1 pk1.1 e6 c40 se0.5 swish"),
    ("ir k3.5.7 s2 e6 c80 se0.25 swish", "ir x3 k3.5.7.9 ek1.1 pk1.1 e6 c80 se0.25 swish"),
    ("ir k3 e6 c120 se0.5 swish", "ir x3 k3.5.7.9 ek1.1 pk1.1 e3 c120 se0.5 swish"),
    ("ir k3.5.7.9 s2 e6 c200 se0.5 swish", "ir x3 k3.5.7.9 pk1.1 e6 c200 se0.5 swish"),
)

_MNASNET_B1 = (
    ("ds k3 c16 noskip",),
    ("ir x3 k3 s2 e3 c24",),
    ("ir x3 k5 s2 e3 c40",),
    ("ir x3 k5 s2 e6 c80",),
    ("ir x2 k3 e6 c96",),
    ("ir x4 k5 s2 e6 c192",),
    ("ir k3 e6 c320 noskip",),
)
_MNASNET_A1 = (
    ("ds k3 c16 noskip",),
    ("ir x2 k3 s2 e6 c24",),
    (f"ir x3 k5 s2 e3 c40 {_SE}",),
    ("ir x4 k3 s2 e6 c80",),
    (f"ir x2 k3 e6 c112 {_SE}",),
    (f"ir x3 k5 s2 e6 c160 {_SE}",),
    ("ir k3 e6 c320",),
)
_MNASNET_SMALL = (
    ("ds k3 c8",),
    ("ir k3 s2 e3 c16",),
    ("ir x2 k3 s2 e6 c16",),
    (f"ir x4 k5 s2 e6 c32 {_SE}",),
    (f"ir x3 k3 e6 c32 {_SE}",),
    (f"ir x3 k5 s2 e6 c88 {_SE}",),
    ("ir k3 e6 c144",),
)
_SPNASNET = (
    ("ds k3 c16 noskip",),
    ("ir x3 k3 s2 e3 c24",),
    ("ir k5 s2 e6 c40", "ir x3 k3 e3 c40"),
    ("ir k5 s2 e6 c80", "ir x3 k3 e3 c80"),
    ("ir k5 e6 c96", "ir x3 k5 e3 c96"),
    ("ir x4 k5 s2 e6 c192",),
    ("ir k3 e6 c320 noskip",),
)
_FBNETC = (
    ("ir k3 e1 c16",),
    ("ir k3 s2 e6 c24", "ir x2 k3 e1 c24"),
    ("ir k5 s2 e6 c32", "ir k5 e3 c32", "ir k5 e6 c32", "ir k3 e6 c32"),
    ("ir k5 s2 e6 c64", "ir k5 e3 c64", "ir x2 k5 e6 c64"),
    ("ir k5 e6 c112", "ir x2 k5 e6 c112", "ir k5 e3 c112"),
    ("ir k5 s2 e6 c184", "ir x3 k5 e6 c184"),
    ("ir k3 e6 c352",),
)
_MOBILENET_V1 = (
    ("dsa k3 c64 noskip",),
    ("dsa k3 s2 c128", "dsa k3 c128 noskip"),
    ("dsa k3 s2 c256", "dsa k3 c256 noskip"),
    ("dsa k3 s2 c512", "dsa x5 k3 c512 noskip"),
    ("dsa k3 s2 c1024", "dsa k3 c1024 noskip"),
)
_MOBILENET_V2 = (
    ("ds k3 c16",),
    ("ir x2 k3 s2 e6 c24",),
    ("ir x3 k3 s2 e6 c32",),
    ("ir x4 k3 s2 e6 c64",),
    ("ir x3 k3 e6 c96",),
    ("ir x3 k3 s2 e6 c160",),
    ("ir k3 e6 c320",),
)
_EDGETPU_V1 = (
    ("cn k1 c16",),
    ("er k3 s2 e8 c32", "er x3 k3 e4 c32"),
    ("er k3 s2 e8 c48", "er x3 k3 e4 c48"),
    ("ir k3 s2 e8 c96", "ir x3 k3 e4 c96"),
    ("ir k3 e8 c96 noskip", "ir x3 k3 e4 c96"),
    ("ir k5 s2 e8 c160", "ir x3 k5 e4 c160"),
    ("ir k3 e8 c192",),
)


def _edgetpu_v2_blocks(c: tuple[int, ...], gs: int) -> tuple[tuple[str, ...], ...]:
    """MobileNet-EdgeTPU-V2: grouped fused residuals alternate with full ones in stages 1-2."""
    return (
        (f"cn k1 c{c[0]}",),
        (f"er k3 s2 e8 c{c[1]}", f"er k3 e4 c{c[1]} gs{gs}"),
        (f"er k3 s2 e8 c{c[2]}", f"er k3 e4 c{c[2]} gs{gs}", f"er k3 e4 c{c[2]}", f"er k3 e4 c{c[2]} gs{gs}"),
        (f"er k3 s2 e8 c{c[3]}", f"ir x3 k3 e4 c{c[3]}"),
        (f"ir k3 e8 c{c[4]}", f"ir x3 k3 e4 c{c[4]}"),
        (f"ir k3 s2 e8 c{c[5]}", f"ir x3 k3 e4 c{c[5]}"),
        (f"ir k3 e8 c{c[6]}",),
    )


_TEST = (("cn k3 c16",), ("er k3 s2 e4 c24",), ("er k3 s2 e4 c32",), (f"ir k3 s2 e4 c48 {_SE}",),
         (f"ir k3 s2 e4 c64 {_SE}",))


def _pruned(text: str) -> tuple[tuple[int, int, int] | None, ...]:
    """Per-block ``mid/out/se_rd`` widths of a channel-pruned model (``-`` = unpruned block)."""
    return tuple(None if t == "-" else tuple(int(v) for v in t.split("/")) for t in text.split())  # type: ignore[misc]


_PRUNED_B1 = _pruned(
    "- - 48/12/4 62/12/6 48/12/6 70/35/6 61/35/10 51/35/10 175/74/10 188/74/20 137/74/20 164/74/20 399/67/20 "
    "201/67/28 160/67/28 213/67/28 637/192/27 806/192/48 798/192/48 891/192/48 990/192/48 1152/320/48 1912/320/80")
_PRUNED_B2 = _pruned(
    "- - 54/17/4 69/17/6 61/17/6 86/42/6 72/42/12 98/42/12 245/85/12 274/85/22 254/85/22 292/85/22 502/116/22 "
    "315/116/30 354/116/30 443/116/30 719/208/30 1148/208/52 1160/208/52 1182/208/52 1228/208/52 1248/352/52 "
    "2112/352/88")
_PRUNED_B3 = _pruned(
    "- - 27/12/6 49/12/8 48/12/8 83/40/8 90/40/12 85/40/12 215/93/12 261/93/24 219/93/24 254/93/24 236/93/24 "
    "480/120/24 235/120/34 217/120/34 226/120/33 340/120/34 802/232/34 1030/232/58 924/232/58 1016/232/58 "
    "1130/232/58 1266/232/58 1392/384/58 2301/384/96")

_TF = dict(pad="same", norm_eps=1e-3)
_RELU = dict(act="relu")


def _effnet(w: float, d: float, **kw: Any) -> MobileArch:
    return MobileArch(_B0, width=w, depth=d, **kw)


def _lite(w: float, d: float, **kw: Any) -> MobileArch:
    return MobileArch(_LITE, width=w, depth=d, act="relu6", fix_stem=True, head_rule="fixed", fix_first_last=True, **kw)


def _cc(w: float, d: float, experts: int, **kw: Any) -> MobileArch:
    return MobileArch(_effnet_blocks(cc=f"n{experts}"), width=w, depth=d, **kw)


def _edge(w: float, d: float, **kw: Any) -> MobileArch:
    return MobileArch(_EDGE, width=w, depth=d, act="relu", **kw)


def _v2b(w: float, d: float, **kw: Any) -> MobileArch:
    return MobileArch(_V2_BASE, width=w, depth=d, round_limit=0.0, **kw)


def _mixnet(blocks: tuple, w: float = 1.0, d: float = 1.0, **kw: Any) -> MobileArch:
    stem = 16 if blocks is _MIXNET_S else 24
    return MobileArch(blocks, width=w, depth=d, depth_trunc="round", stem_size=stem, head_size=1536,
                      head_rule="fixed", act="relu", **kw)


def _mnasnet(blocks: tuple, w: float, **kw: Any) -> MobileArch:
    return MobileArch(blocks, width=w, head_rule="fixed", act="relu", **kw)


def _mbv2(w: float, d: float = 1.0, fix: bool = False) -> MobileArch:
    return MobileArch(_MOBILENET_V2, width=w, depth=d, act="relu6", fix_stem=fix, fix_first_last=fix,
                      head_rule="fixed" if fix else "max")


def _tinynet(w: float, d: float) -> MobileArch:
    return MobileArch(_B0, width=w, depth=d, depth_trunc="round", fix_stem=True, head_rule="fixed")


def _edgetpu_v2(c: tuple[int, ...], gs: int, stem: int, stem_k: int, head: int) -> MobileArch:
    return MobileArch(_edgetpu_v2_blocks(c, gs), stem_size=stem, stem_kernel=stem_k, head_size=head,
                      head_rule="fixed", act="relu")


_GN8 = dict(norm="groupnorm", norm_group_size=8)
_GN16 = dict(norm="groupnorm", norm_group_size=16)

_ARCHS: dict[str, MobileArch] = {
    "efficientnet_b0": _effnet(1.0, 1.0),
    "efficientnet_b0_g8_gn": _effnet(1.0, 1.0, group_size=8, **_GN8),
    "efficientnet_b0_g16_evos": _effnet(1.0, 1.0, group_size=16, divisor=16),
    "efficientnet_b0_gn": _effnet(1.0, 1.0, **_GN8),
    "efficientnet_b1": _effnet(1.0, 1.1),
    "efficientnet_b1_pruned": _effnet(1.0, 1.1, overrides=_PRUNED_B1, **_TF),
    "efficientnet_b2": _effnet(1.1, 1.2),
    "efficientnet_b2_pruned": _effnet(1.1, 1.2, overrides=_PRUNED_B2, **_TF),
    "efficientnet_b3": _effnet(1.2, 1.4),
    "efficientnet_b3_g8_gn": _effnet(1.2, 1.4, group_size=8, divisor=16, **_GN16),
    "efficientnet_b3_gn": _effnet(1.2, 1.4, divisor=16, **_GN16),
    "efficientnet_b3_pruned": _effnet(1.2, 1.4, overrides=_PRUNED_B3, **_TF),
    "efficientnet_b4": _effnet(1.4, 1.8),
    "efficientnet_b5": _effnet(1.6, 2.2),
    "efficientnet_b6": _effnet(1.8, 2.6),
    "efficientnet_b7": _effnet(2.0, 3.1),
    "efficientnet_b8": _effnet(2.2, 3.6),
    "efficientnet_blur_b0": _effnet(1.0, 1.0, aa="blurpc"),
    "efficientnet_cc_b0_4e": _cc(1.0, 1.0, 4),
    "efficientnet_cc_b0_8e": _cc(1.0, 1.0, 8),
    "efficientnet_cc_b1_8e": _cc(1.0, 1.1, 8),
    "efficientnet_el": _edge(1.2, 1.4),
    "efficientnet_el_pruned": _edge(1.2, 1.4),
    "efficientnet_em": _edge(1.0, 1.1),
    "efficientnet_es": _edge(1.0, 1.0),
    "efficientnet_es_pruned": _edge(1.0, 1.0),
    "efficientnet_h_b5": MobileArch(_effnet_x_blocks(4), width=1.92, depth=2.2),
    "efficientnet_l2": _effnet(4.3, 5.3),
    "efficientnet_lite0": _lite(1.0, 1.0),
    "efficientnet_lite1": _lite(1.0, 1.1),
    "efficientnet_lite2": _lite(1.1, 1.2),
    "efficientnet_lite3": _lite(1.2, 1.4),
    "efficientnet_lite4": _lite(1.4, 1.8),
    "efficientnet_x_b3": MobileArch(_effnet_x_blocks(6), width=1.2, depth=1.4),
    "efficientnet_x_b5": MobileArch(_effnet_x_blocks(6), width=1.6, depth=2.2),
    "efficientnetv2_l": MobileArch(_V2_L),
    "efficientnetv2_m": MobileArch(_V2_M, stem_size=24),
    "efficientnetv2_rw_m": MobileArch(_V2_S_RW, width=1.2, depth=(1.2,) * 4 + (1.6,) * 2, stem_size=24,
                                      head_size=1792),
    "efficientnetv2_rw_s": MobileArch(_V2_S_RW, stem_size=24, head_size=1792),
    "efficientnetv2_rw_t": MobileArch(_V2_S, width=0.8, depth=0.9, stem_size=24),
    "efficientnetv2_s": MobileArch(_V2_S, stem_size=24),
    "efficientnetv2_xl": MobileArch(_V2_XL),
    "fbnetc_100": MobileArch(_FBNETC, stem_size=16, head_size=1984, head_rule="fixed", act="relu"),
    "gc_efficientnetv2_rw_t": MobileArch(_V2_S, width=0.8, depth=0.9, stem_size=24, se=SeCfg(kind="gc")),
    "mixnet_l": _mixnet(_MIXNET_M, 1.3),
    "mixnet_m": _mixnet(_MIXNET_M),
    "mixnet_s": _mixnet(_MIXNET_S),
    "mixnet_xl": _mixnet(_MIXNET_M, 1.6, 1.2),
    "mixnet_xxl": _mixnet(_MIXNET_M, 2.4, 1.3),
    "mnasnet_050": _mnasnet(_MNASNET_B1, 0.5),
    "mnasnet_075": _mnasnet(_MNASNET_B1, 0.75),
    "mnasnet_100": _mnasnet(_MNASNET_B1, 1.0),
    "mnasnet_140": _mnasnet(_MNASNET_B1, 1.4),
    "mnasnet_small": _mnasnet(_MNASNET_SMALL, 1.0, stem_size=8),
    "mobilenet_edgetpu_100": MobileArch(_EDGETPU_V1, head_rule="fixed", act="relu"),
    "mobilenet_edgetpu_v2_l": _edgetpu_v2((32, 64, 96, 192, 240, 256, 384), 32, 64, 7, 1408),
    "mobilenet_edgetpu_v2_m": _edgetpu_v2((32, 64, 80, 160, 192, 240, 320), 16, 64, 5, 1344),
    "mobilenet_edgetpu_v2_s": _edgetpu_v2((24, 48, 64, 128, 160, 192, 256), 16, 64, 5, 1280),
    "mobilenet_edgetpu_v2_xs": _edgetpu_v2((16, 32, 48, 96, 144, 160, 192), 16, 32, 3, 1280),
    "mobilenetv1_100": MobileArch(_MOBILENET_V1, head_size=0, act="relu"),
    "mobilenetv1_100h": MobileArch(_MOBILENET_V1, head_size=1024, act="relu"),
    "mobilenetv1_125": MobileArch(_MOBILENET_V1, width=1.25, head_size=0, act="relu"),
    "mobilenetv2_035": _mbv2(0.35),
    "mobilenetv2_050": _mbv2(0.5),
    "mobilenetv2_075": _mbv2(0.75),
    "mobilenetv2_100": _mbv2(1.0),
    "mobilenetv2_110d": _mbv2(1.1, 1.2, fix=True),
    "mobilenetv2_120d": _mbv2(1.2, 1.4, fix=True),
    "mobilenetv2_140": _mbv2(1.4),
    "semnasnet_050": _mnasnet(_MNASNET_A1, 0.5),
    "semnasnet_075": _mnasnet(_MNASNET_A1, 0.75),
    "semnasnet_100": _mnasnet(_MNASNET_A1, 1.0),
    "semnasnet_140": _mnasnet(_MNASNET_A1, 1.4),
    "spnasnet_100": MobileArch(_SPNASNET, head_rule="fixed", act="relu"),
    "test_efficientnet": MobileArch(_TEST, stem_size=24, head_size=256),
    "test_efficientnet_evos": MobileArch(_TEST, stem_size=24, head_size=256, norm="evonorms0", norm_group_size=8),
    "test_efficientnet_gn": MobileArch(_TEST, stem_size=24, head_size=256, **_GN8),
    "test_efficientnet_ln": MobileArch(_TEST, stem_size=24, head_size=256, norm="layernorm"),
    "tf_efficientnet_b0": _effnet(1.0, 1.0, **_TF),
    "tf_efficientnet_b1": _effnet(1.0, 1.1, **_TF),
    "tf_efficientnet_b2": _effnet(1.1, 1.2, **_TF),
    "tf_efficientnet_b3": _effnet(1.2, 1.4, **_TF),
    "tf_efficientnet_b4": _effnet(1.4, 1.8, **_TF),
    "tf_efficientnet_b5": _effnet(1.6, 2.2, **_TF),
    "tf_efficientnet_b6": _effnet(1.8, 2.6, **_TF),
    "tf_efficientnet_b7": _effnet(2.0, 3.1, **_TF),
    "tf_efficientnet_b8": _effnet(2.2, 3.6, **_TF),
    "tf_efficientnet_cc_b0_4e": _cc(1.0, 1.0, 4, **_TF),
    "tf_efficientnet_cc_b0_8e": _cc(1.0, 1.0, 8, **_TF),
    "tf_efficientnet_cc_b1_8e": _cc(1.0, 1.1, 8, **_TF),
    "tf_efficientnet_el": _edge(1.2, 1.4, **_TF),
    "tf_efficientnet_em": _edge(1.0, 1.1, **_TF),
    "tf_efficientnet_es": _edge(1.0, 1.0, **_TF),
    "tf_efficientnet_l2": _effnet(4.3, 5.3, **_TF),
    "tf_efficientnet_lite0": _lite(1.0, 1.0, **_TF),
    "tf_efficientnet_lite1": _lite(1.0, 1.1, **_TF),
    "tf_efficientnet_lite2": _lite(1.1, 1.2, **_TF),
    "tf_efficientnet_lite3": _lite(1.2, 1.4, **_TF),
    "tf_efficientnet_lite4": _lite(1.4, 1.8, **_TF),
    "tf_efficientnetv2_b0": _v2b(1.0, 1.0, **_TF),
    "tf_efficientnetv2_b1": _v2b(1.0, 1.1, **_TF),
    "tf_efficientnetv2_b2": _v2b(1.1, 1.2, **_TF),
    "tf_efficientnetv2_b3": _v2b(1.2, 1.4, **_TF),
    "tf_efficientnetv2_l": MobileArch(_V2_L, **_TF),
    "tf_efficientnetv2_m": MobileArch(_V2_M, stem_size=24, **_TF),
    "tf_efficientnetv2_s": MobileArch(_V2_S, stem_size=24, **_TF),
    "tf_efficientnetv2_xl": MobileArch(_V2_XL, **_TF),
    "tf_mixnet_l": _mixnet(_MIXNET_M, 1.3, **_TF),
    "tf_mixnet_m": _mixnet(_MIXNET_M, **_TF),
    "tf_mixnet_s": _mixnet(_MIXNET_S, **_TF),
    "tinynet_a": _tinynet(1.0, 1.2),
    "tinynet_b": _tinynet(0.75, 1.1),
    "tinynet_c": _tinynet(0.54, 0.85),
    "tinynet_d": _tinynet(0.54, 0.695),
    "tinynet_e": _tinynet(0.51, 0.6),
}


VARIANTS: dict[str, Variant] = {name: Variant(EfficientNet, arch=arch) for name, arch in _ARCHS.items()}

register_family("efficientnet", VARIANTS)
