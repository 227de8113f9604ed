"""SENet in the layout of the original (Caffe-converted) checkpoints: ``legacy_se*`` models.

Squeeze-and-Excitation networks (Hu et al., 2018, "Squeeze-and-Excitation Networks") as first
published: the stem is one ``layer0`` container (a 7x7 conv, or three 3x3 convs for SENet-154),
followed by a ceil-mode 3x3 max-pool, the classifier is ``last_linear`` and every block ends in
an SE module ``se_module`` (reduction 16, 1x1 convs with bias). The SE-ResNet bottleneck puts the
stride on its first 1x1 conv (the original ResNet v1 placement); SE-ResNeXt and SENet-154 put it
on the grouped 3x3 conv. SENet-154's projection shortcuts are 3x3 strided convs.

The network is our :class:`~visionzoo.models.resnet.ResNet` with these blocks, its stem regrouped
into ``layer0`` and its classifier named ``last_linear``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.pool import create_classifier
from ..layers.squeeze_excite import SEModule
from .base import Variant, register_family
from .resnet import ResNet

__all__ = ["LegacySENet", "LegacySEBasicBlock", "LegacySEBottleneck", "VARIANTS"]


def legacy_se(channels: int, reduction: int = 16) -> SEModule:
    """The published SE module: ``channels // reduction`` hidden units, 1x1 convs with bias."""
    return SEModule(channels, rd_channels=channels // reduction)


class LegacySEBasicBlock(nn.Module):
    """Two 3x3 convs (stride on the first), each followed by BN + ReLU -> SE -> add shortcut -> ReLU
    (SE-ResNet-18/34; unlike ResNet's basic block the second conv is activated too)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 act_layer: Callable[..., nn.Module] = nn.ReLU,
                 attn_layer: Callable[[int], nn.Module] = legacy_se, **_: Any) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = norm_layer(planes)
        self.relu = act_layer(inplace=True)
        self.se_module = (attn_layer or legacy_se)(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.se_module(self.relu(self.bn2(self.conv2(x))))  # the published block activates before SE
        return self.relu(x + shortcut)


class LegacySEBottleneck(nn.Module):
    """1x1 -> 3x3 (grouped) -> 1x1 (x4) -> SE -> add shortcut -> ReLU.

    Widths follow ResNeXt: ``width = floor(planes * base_width / 64) * cardinality`` for the 3x3,
    ``width // reduce_first`` for the first 1x1 (SENet-154: twice the 3x3's input, ``reduce_first=2``
    with 64 groups of 4). ``stride_in_1x1`` strides the first 1x1 conv instead of the 3x3 (SE-ResNet).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 cardinality: int = 1, base_width: int = 64, reduce_first: int = 1, stride_in_1x1: bool = False,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 act_layer: Callable[..., nn.Module] = nn.ReLU,
                 attn_layer: Callable[[int], nn.Module] = legacy_se, **_: Any) -> None:
        super().__init__()
        width = int(planes * base_width / 64) * cardinality
        first = width // reduce_first
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, first, 1, stride=s1, bias=False)
        self.bn1 = norm_layer(first)
        self.conv2 = nn.Conv2d(first, width, 3, stride=s2, padding=1, groups=cardinality, bias=False)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = act_layer(inplace=True)
        self.se_module = (attn_layer or legacy_se)(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.se_module(self.bn3(self.conv3(x)))
        return self.relu(x + shortcut)


class LegacySENet(ResNet):
    """:class:`ResNet` with the legacy SENet module names: stem ``layer0`` (+ ceil-mode max-pool),
    classifier ``last_linear``; level 0 of ``feature_info`` is ``layer0``."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": False}

    def __init__(self, *, layers: Sequence[int], block: type, num_classes: int = 1000,
                 global_pool: str = "avg", **kwargs: Any) -> None:
        kwargs.setdefault("attn_layer", legacy_se)
        super().__init__(layers=layers, block=block, num_classes=num_classes, global_pool=global_pool,
                         zero_init_last=False, **kwargs)
        # regroup the stem into ``layer0`` (conv/bn/relu triples, numbered from 1)
        stem = list(self.conv1) + [self.bn1, self.act1] if isinstance(self.conv1, nn.Sequential) \
            else [self.conv1, self.bn1, self.act1]
        names, kinds = [], {nn.Conv2d: "conv", nn.ReLU: "relu"}
        for i, m in enumerate(stem):
            kind = kinds.get(type(m), "bn")
            names.append(f"{kind}{i // 3 + 1}")
        layer0 = nn.Sequential(OrderedDict(zip(names, stem)))
        modules = OrderedDict(layer0=layer0, maxpool=nn.MaxPool2d(3, stride=2, ceil_mode=True))
        for name in self.stage_names:
            modules[name] = self._modules[name]
        modules["global_pool"] = self._modules["global_pool"]
        modules["last_linear"] = self._modules["fc"]
        self._modules.clear()
        self._modules.update(modules)
        self.feature_info[0] = dict(self.feature_info[0], module="layer0")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer0(x)

    def get_classifier(self) -> nn.Module:
        return self.last_linear

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.last_linear = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.last_linear(x)


_SE_RESNET = Variant(LegacySENet, layers=(3, 4, 6, 3), block=LegacySEBottleneck,
                     block_args=dict(stride_in_1x1=True))
_SE_RESNEXT = Variant(LegacySENet, layers=(3, 4, 6, 3), block=LegacySEBottleneck, cardinality=32, base_width=4)

VARIANTS: dict[str, Variant] = {
    "legacy_senet154": _SE_RESNEXT.but(layers=(3, 8, 36, 3), cardinality=64, base_width=4, block_reduce_first=2,
                                       stem_type="deep", stem_width=64, down_kernel_size=3, drop_rate=0.2),
    "legacy_seresnet18": Variant(LegacySENet, layers=(2, 2, 2, 2), block=LegacySEBasicBlock),
    "legacy_seresnet34": Variant(LegacySENet, layers=(3, 4, 6, 3), block=LegacySEBasicBlock),
    "legacy_seresnet50": _SE_RESNET,
    "legacy_seresnet101": _SE_RESNET.but(layers=(3, 4, 23, 3)),
    "legacy_seresnet152": _SE_RESNET.but(layers=(3, 8, 36, 3)),
    "legacy_seresnext26_32x4d": _SE_RESNEXT.but(layers=(2, 2, 2, 2)),
    "legacy_seresnext50_32x4d": _SE_RESNEXT,
    "legacy_seresnext101_32x4d": _SE_RESNEXT.but(layers=(3, 4, 23, 3)),
}

register_family("senet", VARIANTS)
