"""MobileNetV5, the vision encoder of Gemma 3n (Google, 2025): a MobileNetV4-style hybrid trunk
normalised with RMSNorm instead of batch norm, followed by a multi-scale fusion adapter (MSFA).

Layout: ``conv_stem (conv+bias, RMSNorm, GELU) -> blocks -> msfa -> global_pool -> classifier``.
The trunk reuses the mobile-block builder: fused (edge) residuals at 1/4, universal inverted
bottlenecks with layer scale, and, in the last two stages, mobile multi-query attention (keys and
values shared by all heads, optionally computed on a strided-depthwise downsampled map) alternating
with plain 1x1 FFN bottlenecks. Batch norm would couple the encoder's tokens across a batch and
drift under quantisation; a weight-only RMSNorm over channels does neither.

The MSFA is what Gemma's language model reads: the maps of the last two stages are resized to
the finest of them (nearest neighbour), concatenated along channels (finest first), mixed by an
inverted-residual FFN (1x1 expand x2, GELU, 1x1 project, no shortcut), brought to a fixed
``msfa_output_resolution`` grid (16x16 = 256 soft tokens: average pooling by an integer factor,
bilinear interpolation otherwise) and RMS-normalised. ``num_features`` is the MSFA width.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, create_act_layer
from ..layers.conv_norm_act import ConvNormAct
from ..layers.norm import RmsNorm2d
from ..layers.pool import SelectAdaptivePool2d
from ..features import feature_take_indices
from .base import Intermediates, Variant, register_family
from ._mobile_blocks import BlockEnv, UniversalInvertedResidual
from ._mobile_builder import MobileArch, MobileNetBase, build_stages, make_env
from ._mobile_memory import checkpoint_region
from .efficientnet import EfficientNet, init_weights

__all__ = ["RmsNormAct2d", "MultiScaleFusionAdapter", "MobileNetV5", "VARIANTS"]


class RmsNormAct2d(RmsNorm2d):
    """RMSNorm over the channels of an NCHW map (weight only), then an activation.

    Plays the part of the mobile blocks' ``norm_act`` (norm with the activation inside, one
    ``.weight`` per norm in the state dict)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, apply_act: bool = True,
                 act_layer: LayerType = nn.GELU, act_kwargs: dict | None = None, **_: object) -> None:
        super().__init__(num_channels, eps=eps, affine=affine)
        self.act = create_act_layer(act_layer if apply_act else None, **(act_kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (written out rather than ``super().forward``: TorchScript cannot compile that)
        x = self._norm(x, 1)
        if self.weight is not None:
            x = x * self.weight.reshape(1, -1, 1, 1)
        return self.act(x)


class MultiScaleFusionAdapter(nn.Module):
    """Fuse several trunk maps into one fixed-size token grid (the MSFA, see the module docstring)."""

    def __init__(self, in_chs: Sequence[int], out_chs: int, env: BlockEnv, *, output_resolution: int = 16,
                 expansion: float = 2.0, interpolation: str = "nearest", norm_eps: float = 1e-6) -> None:
        super().__init__()
        total = sum(in_chs)
        self.output_resolution = (output_resolution, output_resolution)
        self.interpolation = interpolation
        # a plain FFN: no depthwise convs, no shortcut, no layer scale
        self.ffn = UniversalInvertedResidual(total, out_chs, replace(env, layer_scale_init=None),
                                             mid_chs=int(total * expansion), skip=False)
        self.norm = RmsNorm2d(out_chs, eps=norm_eps)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        h, w = xs[0].shape[-2], xs[0].shape[-1]  # the finest map comes first
        resized: list[torch.Tensor] = []
        for x in xs:
            if x.shape[-2] != h or x.shape[-1] != w:
                x = F.interpolate(x, size=(h, w), mode=self.interpolation)
            resized.append(x)
        x = self.ffn(torch.cat(resized, dim=1))
        oh, ow = self.output_resolution
        if h != oh or w != ow:
            if h % oh == 0 and w % ow == 0:
                x = F.avg_pool2d(x, kernel_size=(h // oh, w // ow))
            else:
                x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
        return self.norm(x)


class MobileNetV5(MobileNetBase):
    """MobileNetV5 trunk + multi-scale fusion adapter + pooled linear classifier.

    Args:
        arch: the trunk (block definitions; ``act``/``pad``/``layer_scale`` are used, ``norm`` is
            replaced by RMSNorm).
        num_features: width of the MSFA output (the features the head pools).
        msfa_indices: trunk stages fused by the MSFA (default the last two).
        msfa_output_resolution: side of the MSFA's output grid.
        norm_eps: epsilon of every RMSNorm.
    """

    feature_cfg = {"feature_cls": "getter"}  # features_only: the pruned model nested under ``model.``

    def __init__(self, *, arch: MobileArch, num_features: int = 2048, msfa_indices: Sequence[int] = (-2, -1),
                 msfa_output_resolution: int = 16, msfa_expansion: float = 2.0, norm_eps: float = 1e-6,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, output_stride: int = 32, act_layer: str | None = None,
                 pad_type: str | None = None) -> None:
        super().__init__()
        arch = replace(arch, **{k: v for k, v in dict(act=act_layer, pad=pad_type).items() if v is not None})
        self.arch, self.num_classes, self.drop_rate = arch, num_classes, drop_rate
        env = replace(make_env(arch), norm_act=partial(RmsNormAct2d, eps=norm_eps))
        stem = arch.stem_chs
        # the stem conv has a bias; ``bn1`` stays as a (weightless) name for the stem feature level
        self.conv_stem = ConvNormAct(in_chans, stem, arch.stem_kernel, stride=2, padding=arch.pad, bias=True,
                                     norm_layer=partial(env.norm_act, act_layer=env.act_layer), act_layer=None)
        self.bn1 = nn.Identity()
        self.blocks, self.feature_info, self._feature_stage = build_stages(
            arch, stem, env, output_stride=output_stride, drop_path_rate=drop_path_rate)
        self.grad_checkpointing = False
        self.selective_recompute = False
        n = len(self.blocks)
        self.msfa_indices = [i % n for i in msfa_indices]
        stage_chs = {p: f["num_chs"] for p, f in zip(self._feature_stage, self.feature_info)}
        self.msfa = MultiScaleFusionAdapter([stage_chs[i] for i in self.msfa_indices], num_features, env,
                                            output_resolution=msfa_output_resolution, expansion=msfa_expansion,
                                            norm_eps=norm_eps)
        self.num_features = self.head_hidden_size = num_features
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.classifier = self._make_classifier(num_classes)
        init_weights(self)

    # the pooled linear head is EfficientNet's (pool -> dropout -> classifier)
    _make_classifier = EfficientNet._make_classifier
    reset_classifier = EfficientNet.reset_classifier
    forward_head = EfficientNet.forward_head

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_stem(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem(x)
        fused: list[torch.Tensor] = []
        # stages run here rather than through ``_run_stage``: TorchScript has no module-typed parameters
        for i, stage in enumerate(self.blocks):
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint_region(stage, x)
            else:
                x = stage(x)
            if i in self.msfa_indices:
                fused.append(x)
        return self.msfa(fused)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> Intermediates:
        """``FeatureMixin.forward_intermediates``; the returned features are the MSFA's output
        whenever its input stages run (its stages are read as extra levels and handed to it)."""
        positions = self._level_positions()
        take, max_index = feature_take_indices(len(positions), indices)
        level_of = {p: i for i, p in enumerate(positions)}
        extra = [level_of[i] for i in self.msfa_indices if i in level_of]
        fuse = (not intermediates_only and isinstance(self.msfa, MultiScaleFusionAdapter)
                and len(extra) == len(self.msfa_indices) and not (stop_early and max_index < max(extra)))
        if not fuse:
            return super().forward_intermediates(x, take, norm, stop_early, output_fmt, intermediates_only)
        wanted = sorted(set(take) | set(extra))
        maps = super().forward_intermediates(x, wanted, norm, True, output_fmt, intermediates_only=True)
        by_level = dict(zip(wanted, maps))
        return self.msfa([by_level[i] for i in extra]), [by_level[i] for i in take]

    def _prune_head(self) -> None:
        self.msfa = nn.Identity()
        self.reset_classifier(0, "")


# --------------------------------------------------------------------------------------------
# architectures

_ER = ("er k3 s2 e4 c128", "er x2 k3 e4 c128")
_UIR_4 = ("uir ks3 km5 s2 e6 c256", "uir ks5 km0 e4 c256", "uir ks3 km0 e4 c256", "uir ks5 km0 e4 c256",
          "uir ks3 km0 e4 c256")


def _attn_pairs(n: int, mqa: str, chs: int) -> tuple[str, ...]:
    """``n`` x (mobile MQA, 1x1 FFN bottleneck of expansion 2)."""
    return (mqa, f"uir ks0 km0 e2 c{chs}") * n


_BASE = (
    _ER,
    _UIR_4,
    ("uir ks5 km5 s2 e6 c512", "uir x2 ks5 km0 e4 c512", "uir ks0 km0 e1 c512")
    + _attn_pairs(6, "mqa h8 kd64 vd64 c512", 512),
    ("uir ks5 km5 s2 e6 c1024",) + _attn_pairs(7, "mqa h16 kd64 vd64 c1024", 1024),
)
_300M = (
    _ER,
    _UIR_4,
    ("uir ks5 km5 s2 e6 c640", "uir x7 ks5 km0 e4 c640", "uir ks0 km0 e1 c640")
    + _attn_pairs(14, "mqa h12 kd64 vd64 kv2 c640", 640),
    ("uir ks5 km5 s2 e6 c1280",) + _attn_pairs(19, "mqa h16 kd96 vd96 c1280", 1280),
)


def _v5(blocks: tuple) -> MobileArch:
    return MobileArch(blocks, stem_size=64, fix_stem=True, head_size=0, act="gelu_tanh", mid_divisor=8, layer_scale=1e-5)


_v5_base = Variant(MobileNetV5, arch=_v5(_BASE))
_v5_300m = Variant(MobileNetV5, arch=_v5(_300M))

VARIANTS: dict[str, Variant] = {
    "mobilenetv5_300m": _v5_300m,
    "mobilenetv5_300m_enc": _v5_300m,
    "mobilenetv5_base": _v5_base,
}

register_family("mobilenetv5", VARIANTS)
