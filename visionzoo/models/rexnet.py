"""ReXNet (Han et al., 2021, "Rethinking Channel Dimensions for Efficient Model Design",
https://arxiv.org/abs/2007.00992).

The paper's finding: a network's expressiveness suffers when a layer's output rank is limited by
abrupt channel changes, so ReXNet grows the block widths *linearly* with depth (16 -> 196 over the
16 inverted-residual blocks), uses SiLU after the expansion conv and ReLU6 only after the
depthwise conv, and adds a partial residual: the block input is added to the first ``in_chs``
output channels whenever the width grows. ``rexnetr_*`` round every width to a multiple of 8.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..layers.activations import get_act_layer
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import make_divisible
from ..layers.pool import ClassifierHead
from ..layers.squeeze_excite import SEModule
from .base import ClassifierHeadMixin, FlatFeaturesMixin, Variant, register_family

__all__ = ["ReXNet", "LinearBottleneck", "VARIANTS"]


class LinearBottleneck(nn.Module):
    """(1x1 expand, SiLU) -> depthwise -> SE -> ReLU6 -> 1x1 linear projection, with the input added
    to the leading output channels when the stride is 1 and the width does not shrink."""

    def __init__(self, in_chs: int, out_chs: int, *, stride: int = 1, exp_ratio: float = 1.0, se_ratio: float = 0.0,
                 ch_div: int = 1, act_layer: str = "swish", dw_act_layer: str = "relu6",
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.in_chs = in_chs
        self.use_shortcut = stride == 1 and in_chs <= out_chs
        if exp_ratio != 1.0:
            mid = make_divisible(round(in_chs * exp_ratio), ch_div)
            self.conv_exp: Optional[nn.Module] = ConvNormAct(in_chs, mid, 1, act_layer=act_layer)
        else:
            mid = in_chs
            self.conv_exp = None
        self.conv_dw = ConvNormAct(mid, mid, 3, stride=stride, groups=mid, apply_act=False)
        if se_ratio > 0:
            rd = make_divisible(int(mid * se_ratio), ch_div)
            self.se: nn.Module = SEModule(mid, rd_channels=rd, norm_layer=nn.BatchNorm2d)
        else:
            self.se = nn.Identity()
        self.act_dw = get_act_layer(dw_act_layer)()
        self.conv_pwl = ConvNormAct(mid, out_chs, 1, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_exp is not None:
            x = self.conv_exp(x)
        x = self.conv_pwl(self.act_dw(self.se(self.conv_dw(x))))
        if self.use_shortcut:
            x = self.drop_path(x)
            x = torch.cat([x[:, :self.in_chs] + shortcut, x[:, self.in_chs:]], dim=1)
        return x


class ReXNet(FlatFeaturesMixin, ClassifierHeadMixin, nn.Module):
    """ReXNet: a stem, 16 linear bottlenecks of linearly increasing width and a 1x1 conv to the
    head width, all (after the stem) in one ``features`` Sequential as in published weights.

    Args:
        width: width multiplier. depth: depth multiplier of every stage.
        initial_chs / final_chs: width of the first block and total width increase (before ``width``).
        ch_div: round widths to a multiple of this (1 = plain rounding).
        se_ratio: SE reduction (of the expanded width) in the stages flagged by ``se_stages``.
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, width: float = 1.0, depth: float = 1.0, initial_chs: int = 16, final_chs: int = 180,
                 stem_chs: int = 32, head_chs: int = 1280, layers: tuple[int, ...] = (1, 2, 2, 3, 3, 5),
                 strides: tuple[int, ...] = (1, 2, 2, 2, 1, 2), se_stages: tuple[bool, ...] = (False, False, True,
                                                                                             True, True, True),
                 se_ratio: float = 1 / 12, ch_div: int = 1, act_layer: str = "swish", dw_act_layer: str = "relu6",
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"ReXNet supports output_stride=32 only, got {output_stride}")
        self.num_classes = num_classes
        self.grad_checkpointing = False
        stem_base = stem_chs / width if width < 1.0 else stem_chs
        stem_out = make_divisible(round(stem_base * width), ch_div)
        self.stem = ConvNormAct(in_chans, stem_out, 3, stride=2, act_layer=act_layer)

        reps = [int(round(n * depth)) for n in layers]
        total = sum(reps)
        block_strides = [s if i == 0 else 1 for n, s in zip(reps, strides) for i in range(n)]
        block_se = [se for n, se in zip(reps, se_stages) for _ in range(n)]
        base = initial_chs / width if width < 1.0 else initial_chs
        feats: list[nn.Module] = []
        self.feature_info: list[dict] = []
        in_chs, reduction = stem_out, 2
        for i in range(total):
            out_chs = make_divisible(round((base + final_chs * i / total) * width), ch_div)
            if block_strides[i] > 1:
                self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"features.{i - 1}"))
                reduction *= block_strides[i]
            feats.append(LinearBottleneck(in_chs, out_chs, stride=block_strides[i], exp_ratio=1.0 if i == 0 else 6.0,
                                          se_ratio=se_ratio if block_se[i] else 0.0, ch_div=ch_div,
                                          act_layer=act_layer, dw_act_layer=dw_act_layer,
                                          drop_path=drop_path_rate * i / total))
            in_chs = out_chs
        self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"features.{total - 1}"))
        self.num_features = self.head_hidden_size = make_divisible(head_chs * width, ch_div)
        feats.append(ConvNormAct(in_chs, self.num_features, 1, act_layer=act_layer))
        self.features = nn.Sequential(*feats)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.stem(x), None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.features, x)
        return self.features(x)


_rexnet = Variant(ReXNet)
_rexnetr = _rexnet.but(ch_div=8)
VARIANTS: dict[str, Variant] = {
    "rexnet_100": _rexnet,
    "rexnet_130": _rexnet.but(width=1.3),
    "rexnet_150": _rexnet.but(width=1.5),
    "rexnet_200": _rexnet.but(width=2.0),
    "rexnet_300": _rexnet.but(width=3.0),
    "rexnetr_100": _rexnetr,
    "rexnetr_130": _rexnetr.but(width=1.3),
    "rexnetr_150": _rexnetr.but(width=1.5),
    "rexnetr_200": _rexnetr.but(width=2.0),
    "rexnetr_300": _rexnetr.but(width=3.0, ch_div=16),
}

register_family("rexnet", VARIANTS)
