"""Inception-v4: "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
Learning" (Szegedy et al., 2016). https://arxiv.org/abs/1602.07261

The paper's Figure 3 stem (three concatenating splits, 299 -> 35 px), 4 Inception-A, Reduction-A,
7 Inception-B, Reduction-B and 3 Inception-C modules, all in one flat ``features`` Sequential as in
the published (TF-ported) checkpoints; pooled ``last_linear`` classifier.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import FlatFeaturesMixin, Variant, register_family
from .inception_v3 import PooledFcHeadMixin, _Conv

__all__ = ["InceptionV4", "VARIANTS"]


def _avg_pool() -> nn.AvgPool2d:
    """The pool branch's 3x3 stride-1 average over valid pixels only (TF's padding rule)."""
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def _h(k: int) -> dict:
    return dict(kernel_size=(1, k), padding=(0, k // 2))


def _v(k: int) -> dict:
    return dict(kernel_size=(k, 1), padding=(k // 2, 0))


class Mixed3a(nn.Module):
    """Stem split 1: 3x3/2 max-pool | 3x3/2 conv (96), concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = _Conv(64, 96, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.maxpool(x), self.conv(x)], 1)


class Mixed4a(nn.Module):
    """Stem split 2: 1x1 -> 3x3 | 1x1 -> 1x7 -> 7x1 -> 3x3 (both valid-padded, 96 out)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(_Conv(160, 64, 1), _Conv(64, 96, 3, padding=0))
        self.branch1 = nn.Sequential(_Conv(160, 64, 1), _Conv(64, 64, **_h(7)), _Conv(64, 64, **_v(7)),
                                     _Conv(64, 96, 3, padding=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Mixed5a(nn.Module):
    """Stem split 3: 3x3/2 conv (192) | 3x3/2 max-pool, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _Conv(192, 192, 3, stride=2, padding=0)
        self.maxpool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.maxpool(x)], 1)


class InceptionA(nn.Module):
    """35x35 module: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1 (96 each)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _Conv(384, 96, 1)
        self.branch1 = nn.Sequential(_Conv(384, 64, 1), _Conv(64, 96, 3, padding=1))
        self.branch2 = nn.Sequential(_Conv(384, 64, 1), _Conv(64, 96, 3, padding=1), _Conv(96, 96, 3, padding=1))
        self.branch3 = nn.Sequential(_avg_pool(), _Conv(384, 96, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class ReductionA(nn.Module):
    """35 -> 17: 3x3/2 conv | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max-pool (k, l, m, n = 192, 224, 256, 384)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _Conv(384, 384, 3, stride=2, padding=0)
        self.branch1 = nn.Sequential(_Conv(384, 192, 1), _Conv(192, 224, 3, padding=1),
                                     _Conv(224, 256, 3, stride=2, padding=0))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class InceptionB(nn.Module):
    """17x17 module with factorised 7x7 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _Conv(1024, 384, 1)
        self.branch1 = nn.Sequential(_Conv(1024, 192, 1), _Conv(192, 224, **_h(7)), _Conv(224, 256, **_v(7)))
        self.branch2 = nn.Sequential(_Conv(1024, 192, 1), _Conv(192, 192, **_v(7)), _Conv(192, 224, **_h(7)),
                                     _Conv(224, 224, **_v(7)), _Conv(224, 256, **_h(7)))
        self.branch3 = nn.Sequential(_avg_pool(), _Conv(1024, 128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class ReductionB(nn.Module):
    """17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max-pool."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(_Conv(1024, 192, 1), _Conv(192, 192, 3, stride=2, padding=0))
        self.branch1 = nn.Sequential(_Conv(1024, 256, 1), _Conv(256, 256, **_h(7)), _Conv(256, 320, **_v(7)),
                                     _Conv(320, 320, 3, stride=2, padding=0))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class InceptionC(nn.Module):
    """8x8 module: the 3x3 paths end in parallel 1x3 and 3x1 convs, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _Conv(1536, 256, 1)
        self.branch1_0 = _Conv(1536, 384, 1)
        self.branch1_1a = _Conv(384, 256, **_h(3))
        self.branch1_1b = _Conv(384, 256, **_v(3))
        self.branch2_0 = _Conv(1536, 384, 1)
        self.branch2_1 = _Conv(384, 448, **_v(3))
        self.branch2_2 = _Conv(448, 512, **_h(3))
        self.branch2_3a = _Conv(512, 256, **_h(3))
        self.branch2_3b = _Conv(512, 256, **_v(3))
        self.branch3 = nn.Sequential(_avg_pool(), _Conv(1536, 256, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1_0(x)
        b2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(b1), self.branch1_1b(b1),
                          self.branch2_3a(b2), self.branch2_3b(b2), self.branch3(x)], 1)


class InceptionV4(FlatFeaturesMixin, PooledFcHeadMixin, nn.Module):
    """Inception-v4: one flat ``features`` Sequential (stem + 18 modules), pooled ``last_linear``."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    classifier_name = "last_linear"

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"Inception-v4 supports output_stride=32 only, got {output_stride}")
        self.grad_checkpointing = False
        self.features = nn.Sequential(
            _Conv(in_chans, 32, 3, stride=2, padding=0),
            _Conv(32, 32, 3, padding=0),
            _Conv(32, 64, 3, padding=1),
            Mixed3a(), Mixed4a(), Mixed5a(),
            *[InceptionA() for _ in range(4)], ReductionA(),
            *[InceptionB() for _ in range(7)], ReductionB(),
            *[InceptionC() for _ in range(3)],
        )
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="features.2"),
            dict(num_chs=160, reduction=4, module="features.3"),
            dict(num_chs=384, reduction=8, module="features.9"),
            dict(num_chs=1024, reduction=16, module="features.17"),
            dict(num_chs=1536, reduction=32, module="features.21"),
        ]
        self.num_features = self.head_hidden_size = 1536
        self._init_head(num_classes, global_pool, drop_rate)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(x)


VARIANTS: dict[str, Variant] = {
    "inception_v4": Variant(InceptionV4),
}

register_family("inception_v4", VARIANTS)
