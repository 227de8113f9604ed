"""Pre-activation ResNet (ResNetV2, He et al., "Identity Mappings in Deep Residual Networks", 2016)
and Big Transfer (BiT, Kolesnikov et al., 2020).

In a pre-activation block the norm + activation come before each conv, so the residual path is
a pure identity; the projection shortcut reads the pre-activated input. The net therefore ends
with one more norm + activation (``norm``) before the head. BiT widens the net (``x1..x4``),
swaps BatchNorm for GroupNorm and uses weight-standardised convs so that it transfers well with
small batches. Also the batch-free EvoNorm-S0 and FRN variants of ResNetV2-50d.

Every architecture is one row of ``VARIANTS``; one ``ResNetV2`` class builds them all.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import make_divisible
from ..layers.norm_act import get_norm_act_layer
from ..layers.pool import ClassifierHead
from ..layers.std_conv import StdConv2d
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["ResNetV2", "PreActBasic", "PreActBottleneck", "VARIANTS"]

ConvFn = Callable[..., nn.Module]


def _plain_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                groups: int = 1, padding: int | None = None) -> nn.Module:
    if padding is None:
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=False)


class DownsampleConv(nn.Module):
    """Projection shortcut on the pre-activated input: a strided 1x1 conv (no norm)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, conv_layer: ConvFn = _plain_conv) -> None:
        super().__init__()
        self.conv = conv_layer(in_chs, out_chs, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownsampleAvg(nn.Module):
    """ResNet-D projection: 2x2 average pool then 1x1 conv, so no input pixels are skipped."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, conv_layer: ConvFn = _plain_conv) -> None:
        super().__init__()
        self.pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                     else nn.Identity())
        self.conv = conv_layer(in_chs, out_chs, 1, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class PreActBasic(nn.Module):
    """norm-act -> 3x3 conv -> norm-act -> 3x3 conv, plus the shortcut."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, groups: int = 1, conv_layer: ConvFn = _plain_conv,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 downsample: Callable[..., nn.Module] | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        first_dilation = first_dilation or dilation
        self.downsample = downsample(in_chs, out_chs, stride, conv_layer) if downsample is not None else None
        self.norm1 = norm_layer(in_chs)
        self.conv1 = conv_layer(in_chs, mid_chs, 3, stride=stride, dilation=first_dilation, groups=groups)
        self.norm2 = norm_layer(mid_chs)
        self.conv2 = conv_layer(mid_chs, out_chs, 3, dilation=dilation, groups=groups)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_preact = self.norm1(x)
        shortcut = self.downsample(x_preact) if self.downsample is not None else x
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        return self.drop_path(x) + shortcut


class PreActBottleneck(nn.Module):
    """norm-act -> 1x1 -> norm-act -> 3x3 (strided) -> norm-act -> 1x1, plus the shortcut."""

    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int = 1, dilation: int = 1,
                 first_dilation: int | None = None, groups: int = 1, conv_layer: ConvFn = _plain_conv,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 downsample: Callable[..., nn.Module] | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        first_dilation = first_dilation or dilation
        self.downsample = downsample(in_chs, out_chs, stride, conv_layer) if downsample is not None else None
        self.norm1 = norm_layer(in_chs)
        self.conv1 = conv_layer(in_chs, mid_chs, 1)
        self.norm2 = norm_layer(mid_chs)
        self.conv2 = conv_layer(mid_chs, mid_chs, 3, stride=stride, dilation=first_dilation, groups=groups)
        self.norm3 = norm_layer(mid_chs)
        self.conv3 = conv_layer(mid_chs, out_chs, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_preact = self.norm1(x)
        shortcut = self.downsample(x_preact) if self.downsample is not None else x
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        return self.drop_path(x) + shortcut


class ResNetStage(nn.Module):
    """A run of blocks at one resolution; the first one may stride / project."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def _make_stem(in_chs: int, out_chs: int, stem_type: str, conv_layer: ConvFn,
               norm_layer: Callable[..., nn.Module]) -> tuple[nn.Sequential, str]:
    """Stem convs (no final norm: the first block pre-activates) + stride-2 max pool.

    Returns the stem and the name of its last conv (the stride-2 feature level).
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if "deep" in stem_type:
        mid = (3 * (out_chs // 8), out_chs // 2) if "tiered" in stem_type else (out_chs // 2, out_chs // 2)
        layers["conv1"] = conv_layer(in_chs, mid[0], 3, stride=2)
        layers["norm1"] = norm_layer(mid[0])
        layers["conv2"] = conv_layer(mid[0], mid[1], 3)
        layers["norm2"] = norm_layer(mid[1])
        layers["conv3"] = conv_layer(mid[1], out_chs, 3)
        feat = "conv3"
    else:
        layers["conv"] = conv_layer(in_chs, out_chs, 7, stride=2)
        feat = "conv"
    if stem_type == "fixed":  # BiT: explicit zero pad then an unpadded pool, as in the TF original
        layers["pad"] = nn.ConstantPad2d(1, 0.0)
        layers["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)
    else:
        layers["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return nn.Sequential(layers), feat


class ResNetV2(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Pre-activation ResNet / BiT backbone, final norm-act and a 1x1-conv classifier head.

    ``width_factor`` scales every width (BiT ``xN``); ``stem_type``: ``''`` (7x7), ``'fixed'``
    (7x7 + zero pad + unpadded pool, BiT), ``'deep'``/``'deep_tiered'`` (three 3x3 convs);
    ``std_conv_eps`` switches to weight-standardised convs; ``norm_layer`` names the fused
    norm + activation (``'batchnorm'``, ``'groupnorm'``, ``'evonorms0'``, ``'frn'``).
    """
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        layers: Sequence[int],
        channels: Sequence[int] = (256, 512, 1024, 2048),
        basic: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        width_factor: int = 1,
        stem_chs: int = 64,
        stem_type: str = "",
        avg_down: bool = False,
        bottle_ratio: float = 0.25,
        groups: int = 1,
        norm_layer: LayerType = "batchnorm",
        act_layer: LayerType = "relu",
        std_conv_eps: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        wf = width_factor
        # sample-wise norm-activations (EvoNorm, FRN) ignore act_layer: their nonlinearity is built in
        norm = partial(get_norm_act_layer(norm_layer), act_layer=act_layer)
        conv: ConvFn = _plain_conv if std_conv_eps is None else partial(_std_conv, eps=std_conv_eps)

        stem_chs = make_divisible(stem_chs * wf)
        self.stem, self._stem_feat = _make_stem(in_chans, stem_chs, stem_type, conv, norm)
        self.feature_info = [dict(num_chs=stem_chs, reduction=2, module=f"stem.{self._stem_feat}")]

        block_cls = PreActBasic if basic else PreActBottleneck
        downsample = DownsampleAvg if avg_down else DownsampleConv
        dprs = drop_path_rates(drop_path_rate, list(layers))
        prev_chs, net_stride, dilation, prev_dilation = stem_chs, 4, 1, 1
        stages = []
        for i, (depth, c) in enumerate(zip(layers, channels)):
            out_chs = make_divisible(c * wf)
            mid_chs = make_divisible(out_chs * bottle_ratio)
            stride = 1 if i == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            blocks = []
            for j in range(depth):
                first = j == 0
                proj = first and (stride != 1 or prev_chs != out_chs)
                blocks.append(block_cls(
                    prev_chs, out_chs, mid_chs, stride=stride if first else 1, dilation=dilation,
                    first_dilation=prev_dilation if first else dilation, groups=groups, conv_layer=conv,
                    norm_layer=norm, downsample=downsample if proj else None, drop_path=dprs[i][j],
                ))
                prev_chs = out_chs
            prev_dilation = dilation
            stages.append(ResNetStage(blocks))
            self.feature_info.append(dict(num_chs=out_chs, reduction=net_stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = prev_chs
        self.norm = norm(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                   use_conv=True)
        self.init_weights(zero_init_last=zero_init_last)

    def init_weights(self, zero_init_last: bool = True) -> None:
        """He-normal convs, small-normal classifier; optionally zero each branch's last conv."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                if name.startswith("head.fc"):
                    nn.init.normal_(m.weight, std=0.01)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (PreActBasic, PreActBottleneck)):
                    m.zero_init_last()

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled stem output, stride-2 feature map)."""
        feat = x
        for name, m in self.stem.named_children():
            x = m(x)
            if name == self._stem_feat:
                feat = x
        return x, feat

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        return self.norm(x)

    # --- FeatureMixin hooks: level 0 = last stem conv (stride 2), 1..4 = stage outputs ----
    # Stage outputs are pre-activation sums; ``norm=True`` applies the final norm-act to the last.
    _norm_is_final = True

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        # the final norm-act belongs to the last stage: it goes with it
        if prune_norm or num_stages < len(self.stages):
            self.norm = nn.Identity()
        self.stages = self.stages[:num_stages]


def _std_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1, groups: int = 1,
              eps: float = 1e-6) -> nn.Module:
    return StdConv2d(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups, eps=eps)


def _r(layers: tuple[int, ...], args: dict[str, Any] | None = None) -> Variant:
    """One row of the table: stage depths and the other ``ResNetV2`` arguments."""
    return Variant(ResNetV2, layers=layers, **(args or {}))


_BASIC = dict(basic=True, channels=(64, 128, 256, 512), bottle_ratio=1.0)
_D = dict(stem_type="deep", avg_down=True)
# BiT: GroupNorm(32) + weight standardisation (eps 1e-8, as in the released TF/JAX models)
_BIT = dict(stem_type="fixed", norm_layer="groupnorm", std_conv_eps=1e-8)
_R50, _R101, _R152 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)

VARIANTS: dict[str, Variant] = {
    "resnetv2_18": _r((2, 2, 2, 2), _BASIC),
    "resnetv2_18d": _r((2, 2, 2, 2), dict(**_BASIC, **_D)),
    "resnetv2_34": _r((3, 4, 6, 3), _BASIC),
    "resnetv2_34d": _r((3, 4, 6, 3), dict(**_BASIC, **_D)),
    "resnetv2_50": _r(_R50),
    "resnetv2_50d": _r(_R50, _D),
    "resnetv2_50t": _r(_R50, dict(stem_type="deep_tiered", avg_down=True)),
    "resnetv2_50d_gn": _r(_R50, dict(**_D, norm_layer="groupnorm")),
    "resnetv2_50d_evos": _r(_R50, dict(**_D, norm_layer="evonorms0")),
    "resnetv2_50d_frn": _r(_R50, dict(**_D, norm_layer="frn")),
    "resnetv2_101": _r(_R101),
    "resnetv2_101d": _r(_R101, _D),
    "resnetv2_152": _r(_R152),
    "resnetv2_152d": _r(_R152, _D),
    "resnetv2_50x1_bit": _r(_R50, dict(**_BIT, width_factor=1)),
    "resnetv2_50x3_bit": _r(_R50, dict(**_BIT, width_factor=3)),
    "resnetv2_101x1_bit": _r(_R101, dict(**_BIT, width_factor=1)),
    "resnetv2_101x3_bit": _r(_R101, dict(**_BIT, width_factor=3)),
    "resnetv2_152x2_bit": _r(_R152, dict(**_BIT, width_factor=2)),
    "resnetv2_152x4_bit": _r(_R152, dict(**_BIT, width_factor=4)),
}


register_family("resnetv2", VARIANTS)
