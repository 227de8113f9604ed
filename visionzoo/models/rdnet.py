"""RDNet ("DenseNets Reloaded: Paradigm Shift Beyond ResNets and ViTs", Kim et al., ECCV 2024,
https://arxiv.org/abs/2403.19588).

DenseNet's concatenation instead of addition, with modern parts: every block maps the running
concatenation to ``growth_rate`` new channels through a ConvNeXt-style ``dw7x7 -> LN -> 1x1 (4x)
-> GELU -> 1x1`` (plus effective squeeze-excite from the third stage on), scaled by a layer-scale
``gamma`` and appended. Between dense stages a ``LN -> conv`` transition halves the width (to a
multiple of 8), with stride 2 only where the resolution drops; a patchify stem and a
pool -> LN -> linear head.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.norm import LayerNorm2d
from ..layers.pool import NormMlpClassifierHead
from ..layers.squeeze_excite import EffectiveSEModule
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["RDNet", "DenseBlock", "DenseStage"]


class _Mixer(nn.Module):
    """Holds the block's layer sequence as ``layers`` (the checkpoint's ``layers.layers.*`` keys)."""

    def __init__(self, in_chs: int, growth_rate: int, ese: bool) -> None:
        super().__init__()
        mods = [nn.Conv2d(in_chs, in_chs, 7, padding=3, groups=in_chs), LayerNorm2d(in_chs),
                nn.Conv2d(in_chs, 4 * in_chs, 1), nn.GELU(), nn.Conv2d(4 * in_chs, growth_rate, 1)]
        if ese:
            mods.append(EffectiveSEModule(growth_rate))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DenseBlock(nn.Module):
    """``growth_rate`` new channels: ``gamma * mixer(concatenated input)``."""

    def __init__(self, in_chs: int, growth_rate: int, ese: bool, ls_init: float = 1e-6,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((growth_rate,), ls_init))
        self.layers = _Mixer(in_chs, growth_rate, ese)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.layers(x) * self.gamma.reshape(1, -1, 1, 1))


class DenseStage(nn.Sequential):
    """Blocks ``dense_block{i}``; each sees the concatenation of the input and all earlier outputs."""

    def __init__(self, in_chs: int, num_blocks: int, growth_rate: int, ese: bool, dp_rates: Sequence[float]) -> None:
        super().__init__()
        for i in range(num_blocks):
            self.add_module(f"dense_block{i}", DenseBlock(in_chs + i * growth_rate, growth_rate, ese,
                                                          drop_path=dp_rates[i]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for block in self:
            feats.append(block(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class RDNet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Patchify stem (stride 4) and dense stages joined by ``LN -> conv`` transitions; four feature
    levels at strides 4/8/16/32 (the last dense stage before each stride-2 transition, and the last)."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, stem_chs: int = 64, growth_rates: Sequence[int] = (64, 104, 128, 128, 128, 128, 224),
                 num_blocks: int = 3, stride_stages: Sequence[int] = (1, 2, 6), ese_from: int = 2,
                 compression: float = 0.5, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_chs, 4, stride=4), LayerNorm2d(stem_chs))
        n = len(growth_rates)
        dpr = drop_path_rates(drop_path_rate, [num_blocks] * n)
        stages, chs, reduction, self.feature_info = [], stem_chs, 4, []
        for i, g in enumerate(growth_rates):
            mods: list[nn.Module] = []
            prev_chs = chs  # the previous dense stage's output width
            if i > 0:
                out = int(chs * compression) // 8 * 8
                k = 2 if i in stride_stages else 1
                mods += [LayerNorm2d(chs), nn.Conv2d(chs, out, k, stride=k)]
                chs = out
                if i in stride_stages:
                    self.feature_info.append(dict(num_chs=prev_chs, reduction=reduction,
                                                  module=f"dense_stages.{i - 1}", growth_rate=growth_rates[i - 1]))
                    reduction *= 2
            mods.append(DenseStage(chs, num_blocks, g, i >= ese_from, dpr[i]))
            chs += num_blocks * g
            stages.append(nn.Sequential(*mods))
        self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"dense_stages.{n - 1}",
                                      growth_rate=growth_rates[-1]))
        self.dense_stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = chs
        self.head = NormMlpClassifierHead(chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.dense_stages, x)
        return self.dense_stages(x)

    # FeatureMixin hooks: the trunk is the dense stages, read at the levels named in feature_info
    def _feature_stages(self) -> list[nn.Module]:
        return list(self.dense_stages)

    def _level_positions(self) -> list[int]:
        n = len(self.dense_stages)
        return [p for p in (int(f["module"].rsplit(".", 1)[1]) for f in self.feature_info) if p < n]

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.dense_stages = self.dense_stages[:num_stages]


_NINE = (2, 9)
VARIANTS: dict[str, Variant] = {
    "rdnet_tiny": Variant(RDNet, stem_chs=64, growth_rates=(64, 104, 128, 128, 128, 128, 224), stride_stages=(1, 2, 6)),
    "rdnet_small": Variant(RDNet, stem_chs=72, growth_rates=(64, 128) + (128,) * 7 + (240, 240),
                           stride_stages=(1,) + _NINE),
    "rdnet_base": Variant(RDNet, stem_chs=120, growth_rates=(96, 128) + (168,) * 7 + (336, 336),
                          stride_stages=(1,) + _NINE),
    "rdnet_large": Variant(RDNet, stem_chs=144, growth_rates=(128, 192) + (256,) * 8 + (360, 360),
                           stride_stages=(1, 2, 10)),
}
register_family("rdnet", VARIANTS)
