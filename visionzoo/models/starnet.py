"""StarNet ("Rewrite the Stars", Ma et al. CVPR 2024).

The "star operation": two pointwise projections of the same input multiplied element-wise
(``act(f1(x)) * f2(x)``), which maps into an implicit high-dimensional feature space without
widening the network. A block is ``x + dw7x7(g(star(dw7x7_bn(x))))``; four stages, each opened by a
strided 3x3 conv-BN, behind a conv-BN-ReLU6 stem; a BatchNorm closes the trunk.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["StarNet", "StarBlock"]


class ConvBN(nn.Sequential):
    """Conv (with bias) and, optionally, BatchNorm, as ``conv`` / ``bn``."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 with_bn: bool = True) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_chs, out_chs, kernel, stride, (kernel - 1) // 2, groups=groups))
        if with_bn:
            self.add_module("bn", nn.BatchNorm2d(out_chs))


class StarBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 3.0, drop_path: float = 0.0, act_layer=nn.ReLU6) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.dwconv = ConvBN(dim, dim, 7, groups=dim)
        self.f1 = ConvBN(dim, hidden, with_bn=False)
        self.f2 = ConvBN(dim, hidden, with_bn=False)
        self.g = ConvBN(hidden, dim)
        self.dwconv2 = ConvBN(dim, dim, 7, groups=dim, with_bn=False)
        self.act = act_layer()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        y = self.act(self.f1(y)) * self.f2(y)  # the star operation
        return x + self.drop_path(self.dwconv2(self.g(y)))


class StarStage(nn.Sequential):
    """``0``: strided 3x3 conv-BN; ``1..``: star blocks."""

    def __init__(self, in_chs: int, dim: int, depth: int, mlp_ratio: float, dp_rates) -> None:
        super().__init__(ConvBN(in_chs, dim, 3, stride=2),
                         *[StarBlock(dim, mlp_ratio, dp_rates[i]) for i in range(depth)])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self, x)
        for m in self:
            x = m(x)
        return x


class StarNet(FeatureMixin, ModelForwardMixin, nn.Module):
    """Stem (stride 2) and four star stages (strides 4..32), BatchNorm, pooled linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False
    _norm_is_final = True

    def __init__(self, *, base_dim: int = 32, depths=(3, 3, 12, 5), mlp_ratio: float = 4.0, stem_chs: int = 32,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.stem = nn.Sequential(ConvBN(in_chans, stem_chs, 3, stride=2), nn.ReLU6())
        dims = [base_dim * 2 ** i for i in range(len(depths))]
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            StarStage(stem_chs if i == 0 else dims[i - 1], dims[i], depths[i], mlp_ratio, dpr[i])
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]
        self.norm = nn.BatchNorm2d(dims[-1])
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    # FeatureMixin hooks
    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


_s4 = Variant(StarNet, base_dim=32, depths=(3, 3, 12, 5), mlp_ratio=4)
VARIANTS: dict[str, Variant] = {
    "starnet_s1": _s4.but(base_dim=24, depths=(2, 2, 8, 3)),
    "starnet_s2": _s4.but(depths=(1, 2, 6, 2)),
    "starnet_s3": _s4.but(depths=(2, 2, 8, 4)),
    "starnet_s4": _s4,
    "starnet_s050": _s4.but(base_dim=16, depths=(1, 1, 3, 1), mlp_ratio=3),
    "starnet_s100": _s4.but(base_dim=20, depths=(1, 2, 4, 1)),
    "starnet_s150": _s4.but(base_dim=24, depths=(1, 2, 4, 2), mlp_ratio=3),
}
register_family("starnet", VARIANTS)
