"""VGG: "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2014).

https://arxiv.org/abs/1409.1556

Stacks of 3x3 convolutions (optionally batch-normalised) separated by 2x2 max pools, followed by
the two 4096-wide fully connected layers of the paper. Those are expressed as convolutions
(``pre_logits.fc1`` is a 7x7 conv over the final 7x7 map, ``fc2`` a 1x1 conv) so the network
runs on any input size; the classifier is a pooled ``head.fc``.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.norm import get_norm_layer
from ..layers.pool import ClassifierHead
from .base import ClassifierHeadMixin, FlatFeaturesMixin, Variant, register_family

__all__ = ["VGG", "VARIANTS"]

# A layer spec: an int is a 3x3 conv with that many output channels, "M" a 2x2 max pool.
LayerSpec = Sequence[Union[int, str]]


class ConvMlp(nn.Module):
    """The paper's fc6/fc7 as convolutions: ``kernel_size`` conv -> act -> drop -> 1x1 conv -> act.

    Inputs smaller than ``kernel_size`` are average-pooled up to it so the first conv still applies.
    """

    def __init__(self, in_features: int = 512, out_features: int = 4096, kernel_size: int = 7,
                 mlp_ratio: float = 1.0, drop_rate: float = 0.2, act_layer: LayerType = nn.ReLU) -> None:
        super().__init__()
        self.input_size = kernel_size
        mid_features = int(out_features * mlp_ratio)
        act = get_act_layer(act_layer)
        self.fc1 = nn.Conv2d(in_features, mid_features, kernel_size, bias=True)
        self.act1 = act()
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Conv2d(mid_features, out_features, 1, bias=True)
        self.act2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] < self.input_size or x.shape[-1] < self.input_size:
            size = (max(self.input_size, x.shape[-2]), max(self.input_size, x.shape[-1]))
            x = F.adaptive_avg_pool2d(x, size)
        x = self.drop(self.act1(self.fc1(x)))
        return self.act2(self.fc2(x))


class VGG(FlatFeaturesMixin, ClassifierHeadMixin, nn.Module):
    """VGG network; ``features`` keeps the flat ``nn.Sequential`` layout of published weights.

    Feature levels are the activations just before each max pool (reductions 1..16) and the
    output of the last pool (reduction 32).
    """
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        layers: LayerSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        output_stride: int = 32,
        mlp_ratio: float = 1.0,
        act_layer: LayerType = nn.ReLU,
        norm_layer: LayerType = None,
        hidden_size: int = 4096,
    ) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"VGG supports output_stride=32 only, got {output_stride}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        act = get_act_layer(act_layer)
        norm = get_norm_layer(norm_layer)

        mods: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        chs, reduction = in_chans, 1
        for spec in layers:
            if spec == "M":
                self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"features.{len(mods) - 1}"))
                mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
                reduction *= 2
            else:
                mods.append(nn.Conv2d(chs, int(spec), kernel_size=3, padding=1))
                if norm is not None:
                    mods.append(norm(int(spec)))
                mods.append(act())
                chs = int(spec)
        self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"features.{len(mods) - 1}"))
        self.features = nn.Sequential(*mods)

        self.num_features = chs
        self.head_hidden_size = hidden_size
        self.pre_logits = ConvMlp(chs, hidden_size, 7, mlp_ratio=mlp_ratio, drop_rate=drop_rate, act_layer=act_layer)
        self.head = ClassifierHead(hidden_size, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.num_classes == 0 and self.head.global_pool.is_identity():
            # no pool, no classifier (reset_classifier(0, '')): fc6's 7x7 window would itself pool
            # the map to 1x1, so the unpooled output is the feature map (pretrained_cfg['pool_size'])
            return x
        x = self.pre_logits(x)
        return self.head(x, pre_logits=pre_logits)

    def _prune_head(self) -> None:
        """The classifier and the fc6/fc7 ``pre_logits`` in front of it."""
        self.reset_classifier(0, "")
        self.pre_logits = nn.Identity()


_STAGES: dict[int, LayerSpec] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

# architecture name -> constructor arguments (the paper's configurations A, B, D and E)
VARIANTS: dict[str, Variant] = {}
for _depth, _layers in _STAGES.items():
    VARIANTS[f"vgg{_depth}"] = Variant(VGG, layers=_layers)
    VARIANTS[f"vgg{_depth}_bn"] = VARIANTS[f"vgg{_depth}"].but(norm_layer="batchnorm2d")


register_family("vgg", VARIANTS)
