"""PP-HGNet (PaddleClas, 2022) and PP-HGNetV2 (PaddleClas, 2023): GPU-friendly "high-performance
GPU" networks built from HG blocks.

An HG block runs a chain of ``n`` convs, concatenates the block input with every intermediate map
(OSA/VoVNet-style one-shot aggregation) and mixes them with 1x1 convs: v1 one 1x1 conv and an
effective-SE gate, v2 two 1x1 convs (squeeze to half, expand). Stages after the first start with a
strided depthwise conv; blocks after a stage's first are residual. v2 uses a two-branch stem
(2x2 convs vs. max pool, concatenated), "light" blocks (1x1 conv then depthwise kxk) in its last
two stages and, in the smaller models, a learnable affine (``scale * x + bias``) after every
activation.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, Variant, register_family

__all__ = ["HighPerfGpuNet", "LearnableAffineBlock", "VARIANTS"]


class LearnableAffineBlock(nn.Module):
    """``scale * x + bias`` with two learned scalars."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    """``conv`` -> ``bn`` -> ReLU -> [learnable affine] (keys ``conv``/``bn``/``lab``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 use_act: bool = True, use_lab: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU() if use_act else nn.Identity()
        self.lab = LearnableAffineBlock() if use_act and use_lab else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lab(self.act(self.bn(self.conv(x))))


class LightConvBNAct(nn.Module):
    """1x1 conv+BN (no activation) -> depthwise kxk conv+BN+ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, use_lab: bool = False) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_chs, out_chs, 1, use_act=False, use_lab=use_lab)
        self.conv2 = ConvBNAct(out_chs, out_chs, kernel_size, groups=out_chs, use_lab=use_lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class StemV1(nn.Module):
    """Three 3x3 convs (the first strided) and a 3x3/2 max pool."""

    def __init__(self, in_chs: int, chs: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(*[ConvBNAct(in_chs if i == 0 else chs[i - 1], c, 3, stride=2 if i == 0 else 1)
                                    for i, c in enumerate(chs)])
        self.pool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stem(x))


class StemV2(nn.Module):
    """3x3/2 conv, then [two 2x2 convs | 2x2 max pool] concatenated, 3x3/2 conv, 1x1 conv."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, use_lab: bool = False) -> None:
        super().__init__()
        self.stem1 = ConvBNAct(in_chs, mid_chs, 3, 2, use_lab=use_lab)
        self.stem2a = ConvBNAct(mid_chs, mid_chs // 2, 2, use_lab=use_lab)
        self.stem2b = ConvBNAct(mid_chs // 2, mid_chs, 2, use_lab=use_lab)
        self.stem3 = ConvBNAct(mid_chs * 2, mid_chs, 3, 2, use_lab=use_lab)
        self.stem4 = ConvBNAct(mid_chs, out_chs, 1, use_lab=use_lab)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.stem1(x), (0, 1, 0, 1))
        x2 = self.stem2b(F.pad(self.stem2a(x), (0, 1, 0, 1)))
        x = torch.cat([self.pool(x), x2], dim=1)
        return self.stem4(self.stem3(x))


class EseModule(nn.Module):
    """Effective SE: ``x * sigmoid(conv1x1(mean(x)))``."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(chs, chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x.mean((2, 3), keepdim=True)))


class HGBlock(nn.Module):
    """``layer_num`` chained convs, concatenated with the input, aggregated by 1x1 convs."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, layer_num: int, kernel_size: int = 3,
                 residual: bool = False, light: bool = False, v2: bool = False, use_lab: bool = False,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.ModuleList([
            LightConvBNAct(in_chs if i == 0 else mid_chs, mid_chs, kernel_size, use_lab=use_lab) if light
            else ConvBNAct(in_chs if i == 0 else mid_chs, mid_chs, kernel_size, use_lab=use_lab)
            for i in range(layer_num)])
        total = in_chs + layer_num * mid_chs
        if v2:
            self.aggregation = nn.Sequential(ConvBNAct(total, out_chs // 2, 1, use_lab=use_lab),
                                             ConvBNAct(out_chs // 2, out_chs, 1, use_lab=use_lab))
        else:
            self.aggregation = nn.Sequential(ConvBNAct(total, out_chs, 1), EseModule(out_chs))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        outs = [x]
        for layer in self.layers:
            x = layer(x)
            outs.append(x)
        x = self.aggregation(torch.cat(outs, dim=1))
        if self.residual:
            x = self.drop_path(x) + identity
        return x


class HGStage(nn.Module):
    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, depth: int, downsample: bool, light: bool,
                 kernel_size: int, layer_num: int, v2: bool, use_lab: bool, drop_path: list[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = (ConvBNAct(in_chs, in_chs, 3, 2, groups=in_chs, use_act=False) if downsample
                           else nn.Identity())
        self.blocks = nn.Sequential(*[
            HGBlock(in_chs if i == 0 else out_chs, mid_chs, out_chs, layer_num, kernel_size, residual=i > 0,
                    light=light, v2=v2, use_lab=use_lab, drop_path=drop_path[i]) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class HighPerfGpuNet(FeatureMixin, nn.Module):
    """PP-HGNet v1/v2.

    Args:
        stem_chs: v1: the three stem conv widths; v2: (mid, out) of the two-branch stem.
        stages: per stage ``(mid, out, depth, downsample, light, kernel, layer_num)``.
        v2: v2 stem and aggregation. use_lab: learnable affine after activations (v2 B0-B3).
        head_chs: width of the 1x1 conv after pooling.
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)
    _stem_level = False

    def __init__(self, *, stem_chs: tuple[int, ...], stages: tuple[tuple, ...], v2: bool = False,
                 use_lab: bool = False, head_chs: int = 2048, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", output_stride: int = 32, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"HGNet supports output_stride=32 only, got {output_stride}")
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.use_lab = use_lab
        self.stem = (StemV2(in_chans, stem_chs[0], stem_chs[1], use_lab=use_lab) if v2
                     else StemV1(in_chans, tuple(stem_chs)))
        in_chs, reduction = stem_chs[-1], 4
        total = sum(s[2] for s in stages)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        blocks, self.feature_info, k = [], [], 0
        for i, (mid, out, depth, down, light, ks, n) in enumerate(stages):
            blocks.append(HGStage(in_chs, mid, out, depth, down, light, ks, n, v2, use_lab, dpr[k:k + depth]))
            k += depth
            in_chs = out
            reduction *= 2 if down else 1
            self.feature_info.append(dict(num_chs=out, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*blocks)
        self.num_features = in_chs
        self.head_hidden_size = head_chs
        self.head = _Head(in_chs, head_chs, num_classes, global_pool, drop_rate, use_lab)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _prune_head(self) -> None:
        self.head = _Head(self.num_features, 0, 0, "", 0.0, False)
        self.head_hidden_size = self.num_features
        self.num_classes = 0


class _Head(nn.Module):
    """Global pool -> [1x1 conv -> ReLU -> (affine)] -> dropout -> flatten -> fc."""

    def __init__(self, in_chs: int, hidden: int, num_classes: int, pool_type: str, drop_rate: float,
                 use_lab: bool) -> None:
        super().__init__()
        self.global_pool = SelectAdaptivePool2d(pool_type)
        if hidden:
            layers = [nn.Conv2d(in_chs, hidden, 1, bias=False), nn.ReLU()]
            if use_lab:
                layers.append(LearnableAffineBlock())
            self.last_conv: nn.Module = nn.Sequential(*layers)
            self.width = hidden
        else:
            self.last_conv, self.width = nn.Identity(), in_chs
        self.dropout = nn.Dropout(drop_rate)
        self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.fc = nn.Linear(self.width, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type)
            self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.fc = nn.Linear(self.width, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.dropout(self.last_conv(self.global_pool(x))))
        return x if pre_logits else self.fc(x)


T, F_ = True, False
_v1 = Variant(HighPerfGpuNet)
_v2 = Variant(HighPerfGpuNet, v2=True)
VARIANTS: dict[str, Variant] = {
    "hgnet_tiny": _v1.but(stem_chs=(48, 48, 96), stages=(
        (96, 224, 1, F_, F_, 3, 5), (128, 448, 1, T, F_, 3, 5), (160, 512, 2, T, F_, 3, 5), (192, 768, 1, T, F_, 3, 5))),
    "hgnet_small": _v1.but(stem_chs=(64, 64, 128), stages=(
        (128, 256, 1, F_, F_, 3, 6), (160, 512, 1, T, F_, 3, 6), (192, 768, 2, T, F_, 3, 6),
        (224, 1024, 1, T, F_, 3, 6))),
    "hgnet_base": _v1.but(stem_chs=(96, 96, 160), stages=(
        (192, 320, 1, F_, F_, 3, 7), (224, 640, 2, T, F_, 3, 7), (256, 960, 3, T, F_, 3, 7),
        (288, 1280, 2, T, F_, 3, 7))),
    "hgnetv2_b0": _v2.but(use_lab=True, stem_chs=(16, 16), stages=(
        (16, 64, 1, F_, F_, 3, 3), (32, 256, 1, T, F_, 3, 3), (64, 512, 2, T, T, 5, 3), (128, 1024, 1, T, T, 5, 3))),
    "hgnetv2_b1": _v2.but(use_lab=True, stem_chs=(24, 32), stages=(
        (32, 64, 1, F_, F_, 3, 3), (48, 256, 1, T, F_, 3, 3), (96, 512, 2, T, T, 5, 3), (192, 1024, 1, T, T, 5, 3))),
    "hgnetv2_b2": _v2.but(use_lab=True, stem_chs=(24, 32), stages=(
        (32, 96, 1, F_, F_, 3, 4), (64, 384, 1, T, F_, 3, 4), (128, 768, 3, T, T, 5, 4), (256, 1536, 1, T, T, 5, 4))),
    "hgnetv2_b3": _v2.but(use_lab=True, stem_chs=(24, 32), stages=(
        (32, 128, 1, F_, F_, 3, 5), (64, 512, 1, T, F_, 3, 5), (128, 1024, 3, T, T, 5, 5),
        (256, 2048, 1, T, T, 5, 5))),
    "hgnetv2_b4": _v2.but(stem_chs=(32, 48), stages=(
        (48, 128, 1, F_, F_, 3, 6), (96, 512, 1, T, F_, 3, 6), (192, 1024, 3, T, T, 5, 6),
        (384, 2048, 1, T, T, 5, 6))),
    "hgnetv2_b5": _v2.but(stem_chs=(32, 64), stages=(
        (64, 128, 1, F_, F_, 3, 6), (128, 512, 2, T, F_, 3, 6), (256, 1024, 5, T, T, 5, 6),
        (512, 2048, 2, T, T, 5, 6))),
    "hgnetv2_b6": _v2.but(stem_chs=(48, 96), stages=(
        (96, 192, 2, F_, F_, 3, 6), (192, 512, 3, T, F_, 3, 6), (384, 1024, 6, T, T, 5, 6),
        (768, 2048, 3, T, T, 5, 6))),
}

register_family("hgnet", VARIANTS)
