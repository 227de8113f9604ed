"""EfficientViT (MIT): multi-scale linear attention for high-resolution dense prediction
(Cai et al., ICCV 2023, arXiv:2205.14756).

Softmax attention is replaced by ReLU linear attention, ``relu(q) (relu(k)^T [v, 1])`` with the
ones column giving the normaliser, so cost is linear in the number of tokens. Multi-scale tokens
come from aggregating q/k/v with small depthwise + grouped pointwise convs (5x5) and attending
over both scales. An EfficientViT block is that ``context_module`` followed by an MBConv
``local_module``, both residual. B models: hard-swish, DSConv stem, MBConv stages; L models: GELU,
ResBlock stem, fused-MBConv early stages and wider downsampling expansions. The head is a 1x1
conv, global pool, linear + LayerNorm + activation and the classifier.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["EfficientVitMit", "LiteMLA"]


class ConvLayer(nn.Module):
    """Conv (``conv``, bias only where there is no norm) -> optional BN (``norm``) -> optional act."""

    def __init__(self, in_chs: int, out_chs: int, k: int = 1, stride: int = 1, groups: int = 1, bias: bool = False,
                 norm: bool = True, act_layer: Optional[type] = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, k, stride, k // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """``main(x) + x`` (identity shortcut) or ``main(x)`` alone, the module kept as ``main``."""

    def __init__(self, main: nn.Module, residual: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.main = main
        self.residual = residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        return x + self.drop_path(y) if self.residual else y


class DSConv(nn.Module):
    """Depthwise 3x3 (norm, act) -> pointwise 1x1 (norm)."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: type) -> None:
        super().__init__()
        self.depth_conv = ConvLayer(in_chs, in_chs, 3, groups=in_chs, act_layer=act_layer)
        self.point_conv = ConvLayer(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class ResBlock(nn.Module):
    """3x3 (norm, act) -> 3x3 (norm)."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: type) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_chs, out_chs, 3, act_layer=act_layer)
        self.conv2 = ConvLayer(out_chs, out_chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> dw 3x3 (stride) -> 1x1 project. ``fewer_norm``: the first
    two convs have a bias and no norm (only the projection is normalised)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: float, act_layer: type,
                 fewer_norm: bool) -> None:
        super().__init__()
        mid = round(in_chs * expand)
        self.inverted_conv = ConvLayer(in_chs, mid, 1, bias=fewer_norm, norm=not fewer_norm, act_layer=act_layer)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=not fewer_norm,
                                    act_layer=act_layer)
        self.point_conv = ConvLayer(mid, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class FusedMBConv(nn.Module):
    """Fused inverted residual: 3x3 expand (stride) -> 1x1 project."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: float, act_layer: type,
                 fewer_norm: bool = False) -> None:
        super().__init__()
        mid = round(in_chs * expand)
        self.spatial_conv = ConvLayer(in_chs, mid, 3, stride, bias=fewer_norm, norm=not fewer_norm,
                                      act_layer=act_layer)
        self.point_conv = ConvLayer(mid, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention.

    ``qkv`` (1x1) makes ``heads`` groups of ``[q, k, v]`` (``dim`` channels each); every
    ``aggreg`` branch (depthwise ``s x s`` then grouped 1x1, one group per q/k/v of a head) makes
    another set of heads from them. Per head ``out = relu(q) @ (relu(k)^T @ [v, 1])``, and the
    last column divides the rest. ``proj`` (1x1 + BN) mixes all heads.
    """

    def __init__(self, in_chs: int, out_chs: int, dim: int = 8, scales: Sequence[int] = (5,),
                 eps: float = 1e-5) -> None:
        super().__init__()
        heads = in_chs // dim
        total = heads * dim
        self.dim, self.eps = dim, eps
        self.qkv = ConvLayer(in_chs, 3 * total, 1, norm=False)
        self.aggreg = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                          nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False))
            for s in scales])
        self.kernel_func = nn.ReLU()
        self.proj = ConvLayer(total * (1 + len(scales)), out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        qkv = qkv.reshape(b, -1, 3 * self.dim, h * w).transpose(-1, -2).float()
        q, k, v = qkv.split([self.dim, self.dim, self.dim], dim=-1)
        q, k = self.kernel_func(q), self.kernel_func(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)
        out = q @ (k.transpose(-1, -2) @ v)
        out = out[..., :-1] / (out[..., -1:] + self.eps)
        out = out.to(x.dtype).transpose(-1, -2).reshape(b, -1, h, w)
        return self.proj(out)


class EfficientVitBlock(nn.Module):
    """Linear-attention ``context_module`` then MBConv ``local_module``, both residual."""

    def __init__(self, dim: int, head_dim: int, expand: float, act_layer: type, drop_path: float = 0.0) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(dim, dim, head_dim), drop_path=drop_path)
        self.local_module = ResidualBlock(MBConv(dim, dim, 1, expand, act_layer, fewer_norm=True),
                                          drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def _conv_block(kind: str, in_chs: int, out_chs: int, stride: int, expand: float, act_layer: type,
                fewer_norm: bool) -> nn.Module:
    if kind == "fmb":
        return FusedMBConv(in_chs, out_chs, stride, expand, act_layer, fewer_norm)
    return MBConv(in_chs, out_chs, stride, expand, act_layer, fewer_norm)


class Stage(nn.Module):
    """``blocks``: a stride-2 conv block (no shortcut), then residual conv or EfficientViT blocks."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, kind: str, expand: float, down_expand: float,
                 fewer_norm: bool, head_dim: int, act_layer: type, dpr: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        down_kind = "mb" if kind == "att" else kind
        blocks = [ResidualBlock(_conv_block(down_kind, in_chs, out_chs, 2, down_expand, act_layer, fewer_norm),
                                residual=False)]
        for i in range(depth):
            if kind == "att":
                blocks.append(EfficientVitBlock(out_chs, head_dim, expand, act_layer, dpr[i]))
            else:
                blocks.append(ResidualBlock(_conv_block(kind, out_chs, out_chs, 1, expand, act_layer, fewer_norm),
                                            drop_path=dpr[i]))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class ClassifierHead(nn.Module):
    """1x1 conv (BN, act) -> pool -> ``classifier``: linear (no bias), LayerNorm, act, dropout, linear.
    ``pre_logits`` stops before the last linear; an empty pool returns the conv's map."""

    def __init__(self, in_chs: int, widths: Sequence[int], num_classes: int, act_layer: type,
                 pool_type: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_conv = ConvLayer(in_chs, widths[0], 1, act_layer=act_layer)
        self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        self.classifier = nn.Sequential(
            nn.Linear(widths[0], widths[1], bias=False), nn.LayerNorm(widths[1]), act_layer(), nn.Dropout(drop_rate),
            nn.Linear(widths[1], num_classes) if num_classes > 0 else nn.Identity())

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        width = self.classifier[1].normalized_shape[0]
        self.classifier[4] = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.in_conv(x)
        if self.global_pool.is_identity():
            return x
        x = self.global_pool(x)
        x = self.classifier[3](self.classifier[2](self.classifier[1](self.classifier[0](x))))
        return x if pre_logits else self.classifier[4](x)


class EfficientVitMit(FeatureMixin, ModelForwardMixin, nn.Module):
    """Stem (stride 2) and four stages (strides 4..32) of conv and EfficientViT blocks."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, widths: Sequence[int] = (8, 16, 32, 64, 128), depths: Sequence[int] = (1, 2, 2, 2, 2),
                 head_dim: int = 16, head_widths: Sequence[int] = (1024, 1280), large: bool = False,
                 act_layer: LayerType = "hard_swish", norm_eps: float = 1e-5, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        act = get_act_layer(act_layer)
        self.stem = nn.Sequential()
        self.stem.add_module("in_conv", ConvLayer(in_chans, widths[0], 3, 2, act_layer=act))
        for i in range(depths[0]):
            block = ResBlock(widths[0], widths[0], act) if large else DSConv(widths[0], widths[0], act)
            self.stem.add_module(f"res{i}", ResidualBlock(block))
        if large:
            kinds, expands, downs, fewer = ("fmb", "fmb", "mb", "att"), (4, 4, 4, 6), (16, 16, 16, 24), \
                (False, False, True, True)
            counts = list(depths[1:])
        else:
            kinds, expands, downs, fewer = ("mb", "mb", "att", "att"), (4, 4, 4, 4), (4, 4, 4, 4), \
                (False, False, True, True)
            counts = [d - 1 if k != "att" else d for d, k in zip(depths[1:], kinds)]
        dpr = drop_path_rates(drop_path_rate, counts)
        stages, self.feature_info = [], []
        for i in range(4):
            stages.append(Stage(widths[i], widths[i + 1], counts[i], kinds[i], expands[i], downs[i], fewer[i],
                                head_dim, act, dpr[i]))
            self.feature_info.append(dict(num_chs=widths[i + 1], reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.head_hidden_size = head_widths[-1]
        self.head = ClassifierHead(widths[-1], head_widths, num_classes, act, global_pool, drop_rate)
        for m in self.modules():  # L models use BN eps 1e-7
            if isinstance(m, nn.BatchNorm2d):
                m.eps = norm_eps

    def get_classifier(self) -> nn.Module:
        return self.head.classifier[4]

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


_b = Variant(EfficientVitMit, widths=(8, 16, 32, 64, 128), depths=(1, 2, 2, 2, 2), head_dim=16,
             head_widths=(1024, 1280))
_l = Variant(EfficientVitMit, widths=(32, 64, 128, 256, 512), depths=(1, 1, 1, 6, 6), head_dim=32,
             head_widths=(3072, 3200), large=True, act_layer="gelu_tanh", norm_eps=1e-7)
VARIANTS: dict[str, Variant] = {
    "efficientvit_b0": _b,
    "efficientvit_b1": _b.but(widths=(16, 32, 64, 128, 256), depths=(1, 2, 3, 3, 4), head_widths=(1536, 1600)),
    "efficientvit_b2": _b.but(widths=(24, 48, 96, 192, 384), depths=(1, 3, 4, 4, 6), head_dim=32,
                              head_widths=(2304, 2560)),
    "efficientvit_b3": _b.but(widths=(32, 64, 128, 256, 512), depths=(1, 4, 6, 6, 9), head_dim=32,
                              head_widths=(2304, 2560)),
    "efficientvit_l1": _l,
    "efficientvit_l2": _l.but(depths=(1, 2, 2, 8, 8)),
    "efficientvit_l3": _l.but(widths=(64, 128, 256, 512, 1024), depths=(1, 2, 2, 8, 8), head_widths=(6144, 6400)),
}
register_family("efficientvit_mit", VARIANTS)
