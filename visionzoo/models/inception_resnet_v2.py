"""Inception-ResNet-v2: "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
Learning" (Szegedy et al., 2016). https://arxiv.org/abs/1602.07261

Inception modules as residual branches: each block concatenates its conv paths, projects them
back to the trunk width with a biased 1x1 conv, scales the result (0.17 / 0.10 / 0.20: the paper's
fix for unstable training of wide residual Inceptions) and adds it before a ReLU. Layout: the
Inception-v3-like stem, ``mixed_5b``, 10 x Block35, ``mixed_6a``, 20 x Block17, ``mixed_7a``,
9 x Block8 + a final Block8 without ReLU, ``conv2d_7b`` (1536) and the ``classif`` classifier.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.drop import DropPath
from .base import Variant, register_family
from .inception_v3 import NamedTrunkMixin, PooledFcHeadMixin, _Conv
from .inception_v4 import _avg_pool, _h, _v

__all__ = ["InceptionResnetV2", "VARIANTS"]


class Mixed5b(nn.Module):
    """35x35 Inception-A-style module that widens the stem's 192 channels to 320."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _Conv(192, 96, 1)
        self.branch1 = nn.Sequential(_Conv(192, 48, 1), _Conv(48, 64, 5, padding=2))
        self.branch2 = nn.Sequential(_Conv(192, 64, 1), _Conv(64, 96, 3, padding=1), _Conv(96, 96, 3, padding=1))
        self.branch3 = nn.Sequential(_avg_pool(), _Conv(192, 64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class _ResidualInception(nn.Module):
    """``act(x + drop_path(scale * conv2d(cat(branches))))``; subclasses build the branches first
    (the published registration order) and then call :meth:`_init_residual`."""

    def _init_residual(self, branch_chs: int, out_chs: int, scale: float, apply_act: bool, drop_path: float) -> None:
        self.scale = scale
        self.conv2d = nn.Conv2d(branch_chs, out_chs, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.relu = nn.ReLU() if apply_act else nn.Identity()

    def _branches(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.drop_path(self.conv2d(self._branches(x)) * self.scale))


class Block35(_ResidualInception):
    """35x35 residual block (Inception-ResNet-A): 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3."""

    def __init__(self, scale: float = 0.17, drop_path: float = 0.0) -> None:
        super().__init__()
        self.branch0 = _Conv(320, 32, 1)
        self.branch1 = nn.Sequential(_Conv(320, 32, 1), _Conv(32, 32, 3, padding=1))
        self.branch2 = nn.Sequential(_Conv(320, 32, 1), _Conv(32, 48, 3, padding=1), _Conv(48, 64, 3, padding=1))
        self._init_residual(128, 320, scale, True, drop_path)

    def _branches(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Block17(_ResidualInception):
    """17x17 residual block (Inception-ResNet-B): 1x1 | 1x1 -> 1x7 -> 7x1."""

    def __init__(self, scale: float = 0.10, drop_path: float = 0.0) -> None:
        super().__init__()
        self.branch0 = _Conv(1088, 192, 1)
        self.branch1 = nn.Sequential(_Conv(1088, 128, 1), _Conv(128, 160, **_h(7)), _Conv(160, 192, **_v(7)))
        self._init_residual(384, 1088, scale, True, drop_path)

    def _branches(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Block8(_ResidualInception):
    """8x8 residual block (Inception-ResNet-C): 1x1 | 1x1 -> 1x3 -> 3x1; the last one has no ReLU."""

    def __init__(self, scale: float = 0.20, no_relu: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        self.branch0 = _Conv(2080, 192, 1)
        self.branch1 = nn.Sequential(_Conv(2080, 192, 1), _Conv(192, 224, **_h(3)), _Conv(224, 256, **_v(3)))
        self._init_residual(448, 2080, scale, not no_relu, drop_path)

    def _branches(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x)], 1)


class Mixed6a(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max-pool (320 -> 1088)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _Conv(320, 384, 3, stride=2, padding=0)
        self.branch1 = nn.Sequential(_Conv(320, 256, 1), _Conv(256, 256, 3, padding=1),
                                     _Conv(256, 384, 3, stride=2, padding=0))
        self.branch2 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], 1)


class Mixed7a(nn.Module):
    """17 -> 8 reduction: three 1x1 -> (3x3 ->) 3x3/2 paths and a 3x3/2 max-pool (1088 -> 2080)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(_Conv(1088, 256, 1), _Conv(256, 384, 3, stride=2, padding=0))
        self.branch1 = nn.Sequential(_Conv(1088, 256, 1), _Conv(256, 288, 3, stride=2, padding=0))
        self.branch2 = nn.Sequential(_Conv(1088, 256, 1), _Conv(256, 288, 3, padding=1),
                                     _Conv(288, 320, 3, stride=2, padding=0))
        self.branch3 = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class InceptionResnetV2(NamedTrunkMixin, PooledFcHeadMixin, nn.Module):
    """Inception-ResNet-v2 with the published module names; pooled ``classif`` classifier."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": False}
    classifier_name = "classif"
    trunk_names = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a",
                   "mixed_5b", "repeat", "mixed_6a", "repeat_1", "mixed_7a", "repeat_2", "block8", "conv2d_7b")

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"Inception-ResNet-v2 supports output_stride=32 only, got {output_stride}")
        self.grad_checkpointing = False
        dpr = [drop_path_rate * i / 39 for i in range(40)]  # linear over the 40 residual blocks
        self.conv2d_1a = _Conv(in_chans, 32, 3, stride=2, padding=0)
        self.conv2d_2a = _Conv(32, 32, 3, padding=0)
        self.conv2d_2b = _Conv(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = _Conv(64, 80, 1)
        self.conv2d_4a = _Conv(80, 192, 3, padding=0)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed5b()
        self.repeat = nn.Sequential(*[Block35(drop_path=dpr[i]) for i in range(10)])
        self.mixed_6a = Mixed6a()
        self.repeat_1 = nn.Sequential(*[Block17(drop_path=dpr[10 + i]) for i in range(20)])
        self.mixed_7a = Mixed7a()
        self.repeat_2 = nn.Sequential(*[Block8(drop_path=dpr[30 + i]) for i in range(9)])
        self.block8 = Block8(scale=1.0, no_relu=True, drop_path=dpr[39])
        self.conv2d_7b = _Conv(2080, 1536, 1)
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="conv2d_2b"),
            dict(num_chs=192, reduction=4, module="conv2d_4a"),
            dict(num_chs=320, reduction=8, module="repeat"),
            dict(num_chs=1088, reduction=16, module="repeat_1"),
            dict(num_chs=1536, reduction=32, module="conv2d_7b"),
        ]
        self.num_features = self.head_hidden_size = 1536
        self._init_head(num_classes, global_pool, drop_rate)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classif(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._run_trunk(x)
        x = self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
        x = self.maxpool_5a(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.repeat(self.mixed_5b(x))
        x = self.repeat_1(self.mixed_6a(x))
        x = self.repeat_2(self.mixed_7a(x))
        return self.conv2d_7b(self.block8(x))


VARIANTS: dict[str, Variant] = {
    "inception_resnet_v2": Variant(InceptionResnetV2),
}

register_family("inception_resnet_v2", VARIANTS)
