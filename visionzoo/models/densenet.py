"""DenseNet: "Densely Connected Convolutional Networks" (Huang et al., 2017).

https://arxiv.org/abs/1608.06993

Each dense layer sees the concatenation of all earlier feature maps of its block and adds
``growth_rate`` new channels (pre-activation BN-ReLU-conv bottleneck: 1x1 to ``bn_size *
growth_rate``, then 3x3). Transitions halve channels and resolution between blocks. Variants with
a ``d`` suffix use a three-conv "deep" stem; ``densenetblur`` anti-aliases the stem's downsampling with
a blur pool (Zhang, 2019). ``memory_efficient=True`` recomputes each layer's concatenation and
bottleneck in backward instead of storing them (Pleiss et al., 2017); that is eager-only, so
models created with ``scriptable=True`` are built without it (a scripted model computes the same
values either way).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType
from ..layers.blur_pool import BlurPool2d
from ..layers.config import is_scriptable
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.norm_act import BatchNormAct2d
from ..layers.pool import create_classifier
from .base import FlatFeaturesMixin, ModelForwardMixin, Variant, register_family

__all__ = ["DenseNet", "VARIANTS"]


def _norm_act(chs: int, act_layer: LayerType) -> nn.Module:
    return BatchNormAct2d(chs, act_layer=act_layer)


class DenseLayer(nn.Module):
    """Pre-activation bottleneck adding ``growth_rate`` channels to the block's running concatenation."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, act_layer: LayerType = nn.ReLU,
                 drop_rate: float = 0.0, memory_efficient: bool = False) -> None:
        super().__init__()
        mid_chs = bn_size * growth_rate
        self.norm1 = _norm_act(in_chs, act_layer)
        self.conv1 = nn.Conv2d(in_chs, mid_chs, kernel_size=1, bias=False)
        self.norm2 = _norm_act(mid_chs, act_layer)
        self.conv2 = nn.Conv2d(mid_chs, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bottleneck(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv1(self.norm1(torch.cat(features, 1)))

    @torch.jit.unused
    def _recompute_bottleneck(self, features: list[torch.Tensor]) -> torch.Tensor:
        # the concatenation and bottleneck are recomputed in backward instead of being stored
        return checkpoint_module(lambda *fs: self.bottleneck(list(fs)), *features)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        # memory-efficient mode is eager-only (TorchScript cannot checkpoint); a scripted model
        # computes the same values, storing the bottleneck activations
        if (self.memory_efficient and not torch.jit.is_scripting() and torch.is_grad_enabled()
                and any(f.requires_grad for f in features)):
            x = self._recompute_bottleneck(features)
        else:
            x = self.bottleneck(features)
        x = self.conv2(self.norm2(x))
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers; the output concatenates the input and every layer's new maps."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, bn_size: int = 4,
                 act_layer: LayerType = nn.ReLU, drop_rate: float = 0.0, memory_efficient: bool = False) -> None:
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size, act_layer,
                                                    drop_rate, memory_efficient)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseTransition(nn.Sequential):
    """Pre-activation 1x1 conv (channel compression) then 2x2 average pooling."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: LayerType = nn.ReLU) -> None:
        super().__init__()
        self.norm = _norm_act(in_chs, act_layer)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(FlatFeaturesMixin, ModelForwardMixin, nn.Module):
    """DenseNet-BC; every layer lives in ``features`` (an ``nn.Sequential``), as in published weights."""
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        stem_width: int = 64,
        stem_type: str = "",
        stem_blur: bool = False,
        bn_size: int = 4,
        compression: float = 0.5,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        act_layer: LayerType = nn.ReLU,
        memory_efficient: bool = False,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"DenseNet supports output_stride=32 only, got {output_stride}")
        if stem_type not in ("", "deep"):
            raise ValueError(f"stem_type must be '' or 'deep', got {stem_type!r}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        memory_efficient = memory_efficient and not is_scriptable()  # checkpointing is eager-only

        stem: list[tuple[str, nn.Module]] = []
        if stem_type == "deep":
            mid = stem_width // 2
            stem += [
                ("conv0", nn.Conv2d(in_chans, mid, 3, stride=2, padding=1, bias=False)),
                ("norm0", _norm_act(mid, act_layer)),
                ("conv1", nn.Conv2d(mid, mid, 3, stride=1, padding=1, bias=False)),
                ("norm1", _norm_act(mid, act_layer)),
                ("conv2", nn.Conv2d(mid, stem_width, 3, stride=1, padding=1, bias=False)),
                ("norm2", _norm_act(stem_width, act_layer)),
            ]
        else:
            stem += [
                ("conv0", nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)),
                ("norm0", _norm_act(stem_width, act_layer)),
            ]
        self.feature_info: list[dict[str, Any]] = [
            dict(num_chs=stem_width, reduction=2, module=f"features.{stem[-1][0]}")]
        if stem_blur:  # max pool without stride, then a strided blur (MaxBlurPool)
            pool0: nn.Module = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
                                             BlurPool2d(stem_width, stride=2))
        else:
            pool0 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stem.append(("pool0", pool0))

        mods = OrderedDict(stem)
        chs, reduction = stem_width, 4
        for i, num_layers in enumerate(block_config):
            mods[f"denseblock{i + 1}"] = DenseBlock(num_layers, chs, growth_rate, bn_size, act_layer,
                                                    proj_drop_rate, memory_efficient)
            chs += num_layers * growth_rate
            if i < len(block_config) - 1:
                self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"features.denseblock{i + 1}"))
                out_chs = int(chs * compression)
                mods[f"transition{i + 1}"] = DenseTransition(chs, out_chs, act_layer)
                chs, reduction = out_chs, reduction * 2
        mods["norm5"] = _norm_act(chs, act_layer)
        self.feature_info.append(dict(num_chs=chs, reduction=reduction, module="features.norm5"))
        self.features = nn.Sequential(mods)

        self.num_features = self.head_hidden_size = chs
        self.global_pool, self.classifier = create_classifier(chs, num_classes, global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, global_pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)


# architecture name -> constructor arguments
VARIANTS: dict[str, Variant] = {
    "densenet121": Variant(DenseNet, growth_rate=32, block_config=(6, 12, 24, 16), stem_width=64),
    "densenetblur121d": Variant(DenseNet, growth_rate=32, block_config=(6, 12, 24, 16), stem_width=64, stem_type="deep",
                             stem_blur=True),
    "densenet169": Variant(DenseNet, growth_rate=32, block_config=(6, 12, 32, 32), stem_width=64),
    "densenet201": Variant(DenseNet, growth_rate=32, block_config=(6, 12, 48, 32), stem_width=64),
    "densenet161": Variant(DenseNet, growth_rate=48, block_config=(6, 12, 36, 24), stem_width=96),
    "densenet264d": Variant(DenseNet, growth_rate=48, block_config=(6, 12, 64, 48), stem_width=96, stem_type="deep"),
}


register_family("densenet", VARIANTS)
