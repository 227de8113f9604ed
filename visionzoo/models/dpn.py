"""Dual Path Networks (Chen et al., 2017, https://arxiv.org/abs/1707.01629).

A dual path block computes one bottleneck (pre-activation 1x1 -> grouped 3x3 -> 1x1) on the
concatenation of two paths and splits its output: one part is added to the residual path (ResNet's
feature re-use), the other is appended to the densely connected path (DenseNet's new features), so
the dense path grows by ``inc`` channels per block. The first block of a stage projects the input
into both paths (a strided 1x1 conv from the second stage on). The "b" variants end the bottleneck
with a BN+ReLU and two separate 1x1 convs instead of one split conv.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType
from ..layers.conv_norm_act import ConvNormAct
from ..layers.norm_act import BatchNormAct2d
from ..layers.pool import SelectAdaptivePool2d
from .base import FlatFeaturesMixin, Variant, register_family

__all__ = ["DPN", "DualPathBlock", "VARIANTS"]

_EPS = 1e-3  # the published models' BatchNorm epsilon
Paths = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


def _cat(x: Paths) -> torch.Tensor:
    return torch.cat(x, dim=1) if isinstance(x, tuple) else x


class CatBnAct(nn.Module):
    """BN + ReLU on the concatenated paths (key ``bn``)."""

    def __init__(self, chs: int, act_layer: LayerType = nn.ReLU) -> None:
        super().__init__()
        self.bn = BatchNormAct2d(chs, eps=_EPS, act_layer=act_layer)

    def forward(self, x: Paths) -> torch.Tensor:
        return self.bn(_cat(x))


class BnActConv2d(nn.Module):
    """Pre-activation conv: BN + ReLU, then a conv without bias (keys ``bn``, ``conv``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act_layer: LayerType = nn.ReLU) -> None:
        super().__init__()
        self.bn = BatchNormAct2d(in_chs, eps=_EPS, act_layer=act_layer)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


class DualPathBlock(nn.Module):
    """One dual path block on ``(residual, dense)`` (or a plain map, for a stage's first block).

    Args:
        kind: ``'proj'`` (first block of the first stage), ``'down'`` (first block of a later
            stage, stride 2) or ``'normal'``.
    """

    def __init__(self, in_chs: int, num_1x1_a: int, num_3x3_b: int, num_1x1_c: int, inc: int, groups: int,
                 kind: str = "normal", b: bool = False, act_layer: LayerType = nn.ReLU) -> None:
        super().__init__()
        self.num_1x1_c, self.inc, self.b = num_1x1_c, inc, b
        stride = 2 if kind == "down" else 1
        self.c1x1_w_s1: Optional[nn.Module] = None
        self.c1x1_w_s2: Optional[nn.Module] = None
        if kind == "proj":
            self.c1x1_w_s1 = BnActConv2d(in_chs, num_1x1_c + 2 * inc, 1, act_layer=act_layer)
        elif kind == "down":
            self.c1x1_w_s2 = BnActConv2d(in_chs, num_1x1_c + 2 * inc, 1, stride=2, act_layer=act_layer)
        self.c1x1_a = BnActConv2d(in_chs, num_1x1_a, 1, act_layer=act_layer)
        self.c3x3_b = BnActConv2d(num_1x1_a, num_3x3_b, 3, stride=stride, groups=groups, act_layer=act_layer)
        if b:
            self.c1x1_c = CatBnAct(num_3x3_b, act_layer)
            self.c1x1_c1 = nn.Conv2d(num_3x3_b, num_1x1_c, 1, bias=False)
            self.c1x1_c2 = nn.Conv2d(num_3x3_b, inc, 1, bias=False)
        else:
            self.c1x1_c = BnActConv2d(num_3x3_b, num_1x1_c + inc, 1, act_layer=act_layer)
            self.c1x1_c1 = None
            self.c1x1_c2 = None

    def forward(self, x: Paths) -> tuple[torch.Tensor, torch.Tensor]:
        x_in = _cat(x)
        c = self.num_1x1_c
        if self.c1x1_w_s1 is not None:
            s = self.c1x1_w_s1(x_in)
            resid, dense = s[:, :c], s[:, c:]
        elif self.c1x1_w_s2 is not None:
            s = self.c1x1_w_s2(x_in)
            resid, dense = s[:, :c], s[:, c:]
        else:
            assert isinstance(x, tuple)
            resid, dense = x[0], x[1]
        y = self.c1x1_c(self.c3x3_b(self.c1x1_a(x_in)))
        if self.c1x1_c1 is not None and self.c1x1_c2 is not None:
            out1, out2 = self.c1x1_c1(y), self.c1x1_c2(y)
        else:
            out1, out2 = y[:, :c], y[:, c:]
        return resid + out1, torch.cat([dense, out2], dim=1)


class DPN(FlatFeaturesMixin, nn.Module):
    """DPN: a conv stem and max pool, four stages of dual path blocks, a final BN+ReLU on the
    concatenated paths, global pool and a 1x1-conv classifier.

    Args:
        num_init_features: stem width; ``small`` nets use a 3x3 stem (else 7x7).
        k_r: bottleneck width of the first stage (scaled with the stage width).
        groups: groups of the 3x3 convs.
        k_sec: blocks per stage; inc_sec: dense-path growth per block, per stage.
        b: the "b" block ending (separate 1x1 convs).
        act_layer: activation of the stem and the final BN (DPN-48b: SiLU); block_act_layer: inside
            the dual path blocks.
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, num_init_features: int = 64, k_r: int = 96, groups: int = 32, k_sec: tuple[int, ...] = (3, 4, 20, 3),
                 inc_sec: tuple[int, ...] = (16, 32, 24, 128), small: bool = False, b: bool = False,
                 act_layer: LayerType = nn.ReLU, block_act_layer: LayerType = nn.ReLU,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"DPN supports output_stride=32 only, got {output_stride}")
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        bw_factor = 1 if small else 4
        k = 3 if small else 7
        blocks: dict[str, nn.Module] = {
            "conv1_1": ConvNormAct(in_chans, num_init_features, k, 2, padding=k // 2, norm_kwargs=dict(eps=_EPS),
                                   act_layer=act_layer),
            "conv1_pool": nn.MaxPool2d(3, 2, 1),
        }
        self.feature_info = [dict(num_chs=num_init_features, reduction=2, module="features.conv1_1")]
        in_chs, reduction = num_init_features, 4
        for si, (depth, inc) in enumerate(zip(k_sec, inc_sec)):
            bw = 64 * bw_factor * 2 ** si
            r = k_r * bw // (64 * bw_factor)
            for j in range(depth):
                kind = "normal" if j else ("proj" if si == 0 else "down")
                blocks[f"conv{si + 2}_{j + 1}"] = DualPathBlock(in_chs, r, r, bw, inc, groups, kind, b, block_act_layer)
                in_chs = bw + 3 * inc if j == 0 else in_chs + inc
            reduction *= 2 if si else 1
            self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"features.conv{si + 2}_{depth}"))
        blocks["conv5_bn_ac"] = CatBnAct(in_chs, act_layer)
        self.features = nn.Sequential()
        for name, m in blocks.items():
            self.features.add_module(name, m)
        self.num_features = self.head_hidden_size = in_chs
        self.global_pool = SelectAdaptivePool2d(global_pool)
        self.classifier = self._make_classifier(num_classes)
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Conv2d(self.num_features, num_classes, 1) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool)
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = self._make_classifier(num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return self.flatten(x)
        return self.flatten(self.classifier(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _level_output(self, x, is_last: bool, norm: bool, output_fmt: str,  # noqa: ANN001 - maps are path pairs
                      in_size: tuple[int, int]) -> torch.Tensor:
        return _cat(x)


VARIANTS: dict[str, Variant] = {
    "dpn48b": Variant(DPN, small=True, num_init_features=10, k_r=128, groups=32, b=True, act_layer="silu",
                      k_sec=(3, 4, 6, 3), inc_sec=(16, 32, 32, 64)),
    "dpn68": Variant(DPN, small=True, num_init_features=10, k_r=128, groups=32,
                     k_sec=(3, 4, 12, 3), inc_sec=(16, 32, 32, 64)),
    "dpn68b": Variant(DPN, small=True, num_init_features=10, k_r=128, groups=32, b=True,
                      k_sec=(3, 4, 12, 3), inc_sec=(16, 32, 32, 64)),
    "dpn92": Variant(DPN, num_init_features=64, k_r=96, groups=32, k_sec=(3, 4, 20, 3), inc_sec=(16, 32, 24, 128)),
    "dpn98": Variant(DPN, num_init_features=96, k_r=160, groups=40, k_sec=(3, 6, 20, 3), inc_sec=(16, 32, 32, 128)),
    "dpn131": Variant(DPN, num_init_features=128, k_r=160, groups=40, k_sec=(4, 8, 28, 3), inc_sec=(16, 32, 32, 128)),
    "dpn107": Variant(DPN, num_init_features=128, k_r=200, groups=50, k_sec=(4, 8, 20, 3), inc_sec=(20, 64, 64, 128)),
}
register_family("dpn", VARIANTS)
