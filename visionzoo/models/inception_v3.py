"""Inception-v3: "Rethinking the Inception Architecture for Computer Vision" (Szegedy et al., 2015).

https://arxiv.org/abs/1512.00567

A valid-padded conv/pool stem (299 -> 35 px), three 35x35 Inception-A modules, a grid reduction,
four 17x17 modules whose 7x7 convs are factorised into 1x7 and 7x1, a second reduction and two
8x8 modules with expanded (parallel 1x3 / 3x1) filter banks. Every conv is conv -> BN (eps 1e-3)
-> ReLU. Module names (``Conv2d_1a_3x3``, ``Mixed_5b``, ...) are the published checkpoints'.

The module also holds :class:`NamedTrunkMixin`, the feature hooks shared by the legacy nets whose
trunk is a run of named top-level modules (Inception v3, Inception-ResNet v2, NASNet, PNASNet).
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.conv_norm_act import ConvNormAct
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.pool import create_classifier
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["InceptionV3", "NamedTrunkMixin", "VARIANTS"]

# TF-trained Inception convs: no bias, BN with eps 1e-3, ReLU
_Conv = partial(ConvNormAct, norm_kwargs=dict(eps=1e-3))


class NamedTrunkMixin(FeatureMixin):
    """Feature hooks for nets whose trunk is the top-level modules named in ``trunk_names``.

    Level ``i`` is read after the trunk module that owns ``feature_info[i]['module']`` (its first
    dotted component). Pruning replaces the trunk modules after the deepest level with identities,
    so an explicit (scriptable) ``forward_features`` keeps naming every module; the published
    top-level names stay, which is what the reference's ``features_only`` wrapper lists.
    """

    _stem_level = False
    trunk_names = ()  # (no annotation: TorchScript would take it for a module attribute)

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return x, None

    def _feature_stages(self) -> list[nn.Module]:
        mods = [getattr(self, n) for n in self.trunk_names]
        return [m for m in mods if not isinstance(m, nn.Identity)]  # pruned modules are identities

    def _level_positions(self) -> list[int]:
        kept = len(self._feature_stages())
        pos = {n: i for i, n in enumerate(self.trunk_names)}
        out = []
        for info in self.feature_info:
            p = pos[info["module"].split(".")[0]]
            if p >= kept:
                break
            out.append(p)
        return out

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        for name in self.trunk_names[num_stages:]:
            setattr(self, name, nn.Identity())

    def _run_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The whole trunk through the checkpointing hook (forward_features' training path)."""
        for i, stage in enumerate(self._feature_stages()):
            x = self._run_stage(i, stage, x)
        return x


class PooledFcHeadMixin(ModelForwardMixin):
    """``global_pool`` -> dropout -> ``<classifier_name>``: the legacy top-level head layout."""

    classifier_name = "fc"

    def _init_head(self, num_classes: int, global_pool: str, drop_rate: float) -> None:
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.global_pool, fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        setattr(self, self.classifier_name, fc)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, fc = create_classifier(self.num_features, num_classes, pool_type=pool)
        setattr(self, self.classifier_name, fc)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier call, by attribute (families named otherwise override it: TorchScript)."""
        return self.fc(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self._classify(x)


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """The pool branch's 3x3 stride-1 average (zero padding counted, as trained)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 module: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1."""

    def __init__(self, in_chs: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _Conv(in_chs, 64, 1)
        self.branch5x5_1 = _Conv(in_chs, 48, 1)
        self.branch5x5_2 = _Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _Conv(in_chs, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, padding=1)
        self.branch_pool = _Conv(in_chs, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction: strided 3x3 | 1x1 -> 3x3 -> strided 3x3 | max-pool."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3 = _Conv(in_chs, 384, 3, stride=2, padding=0)
        self.branch3x3dbl_1 = _Conv(in_chs, 64, 1)
        self.branch3x3dbl_2 = _Conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _Conv(96, 96, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 convs factorised into 1x7 / 7x1 (``c7`` channels inside)."""

    def __init__(self, in_chs: int, c7: int) -> None:
        super().__init__()
        h, v = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = _Conv(in_chs, 192, 1)
        self.branch7x7_1 = _Conv(in_chs, c7, 1)
        self.branch7x7_2 = _Conv(c7, c7, **h)
        self.branch7x7_3 = _Conv(c7, 192, **v)
        self.branch7x7dbl_1 = _Conv(in_chs, c7, 1)
        self.branch7x7dbl_2 = _Conv(c7, c7, **v)
        self.branch7x7dbl_3 = _Conv(c7, c7, **h)
        self.branch7x7dbl_4 = _Conv(c7, c7, **v)
        self.branch7x7dbl_5 = _Conv(c7, 192, **h)
        self.branch_pool = _Conv(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        c = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(c))))
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction: 1x1 -> strided 3x3 | 1x1 -> 1x7 -> 7x1 -> strided 3x3 | max-pool."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3_1 = _Conv(in_chs, 192, 1)
        self.branch3x3_2 = _Conv(192, 320, 3, stride=2, padding=0)
        self.branch7x7x3_1 = _Conv(in_chs, 192, 1)
        self.branch7x7x3_2 = _Conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _Conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _Conv(192, 192, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks: each 3x3 path ends in parallel 1x3 and 3x1 convs."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        h, v = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.branch1x1 = _Conv(in_chs, 320, 1)
        self.branch3x3_1 = _Conv(in_chs, 384, 1)
        self.branch3x3_2a = _Conv(384, 384, **h)
        self.branch3x3_2b = _Conv(384, 384, **v)
        self.branch3x3dbl_1 = _Conv(in_chs, 448, 1)
        self.branch3x3dbl_2 = _Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _Conv(384, 384, **h)
        self.branch3x3dbl_3b = _Conv(384, 384, **v)
        self.branch_pool = _Conv(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        d = self.branch_pool(_avg3(x))
        return torch.cat([a, b, c, d], 1)


class InceptionV3(NamedTrunkMixin, PooledFcHeadMixin, nn.Module):
    """Inception-v3 (no auxiliary classifier): stem, Mixed_5b..Mixed_7c, pooled ``fc``."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": False}
    trunk_names = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Pool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                   "Pool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                   "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.Conv2d_1a_3x3 = _Conv(in_chans, 32, 3, stride=2, padding=0)
        self.Conv2d_2a_3x3 = _Conv(32, 32, 3, padding=0)
        self.Conv2d_2b_3x3 = _Conv(32, 64, 3, padding=1)
        self.Pool1 = nn.MaxPool2d(3, stride=2)
        self.Conv2d_3b_1x1 = _Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _Conv(80, 192, 3, padding=0)
        self.Pool2 = nn.MaxPool2d(3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="Conv2d_2b_3x3"),
            dict(num_chs=192, reduction=4, module="Conv2d_4a_3x3"),
            dict(num_chs=288, reduction=8, module="Mixed_5d"),
            dict(num_chs=768, reduction=16, module="Mixed_6e"),
            dict(num_chs=2048, reduction=32, module="Mixed_7c"),
        ]
        self.num_features = self.head_hidden_size = 2048
        self._init_head(num_classes, global_pool, drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._run_trunk(x)
        x = self.Pool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.Pool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        return self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))


VARIANTS: dict[str, Variant] = {
    "inception_v3": Variant(InceptionV3),
}

register_family("inception_v3", VARIANTS)
