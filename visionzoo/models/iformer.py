"""iFormer: integrating ConvNet and Transformer for mobile applications (Zheng, ICLR 2025,
arXiv:2501.15369).

A ConvNeXt streamlined for phone latency (BatchNorm everywhere, so every conv folds): a stride-4
stem of two 5x5 stride-2 convs and a 1x1, conv blocks of depthwise 7x7 + 1x1 expand / GELU / 1x1
project, and 3x3 stride-2 conv downsampling. The two low-resolution stages then switch to
``cpe`` (residual depthwise 3x3 position conv) -> single-head modulation attention (SHMA) -> conv
FFN triplets. SHMA is one attention head on reduced query/key channels (no multi-head reshapes)
whose output is modulated by a gate computed from the input (``v_gate`` makes value and gate), then
projected. Every branch is residual, with a per-channel LayerScale ``gamma`` in the largest model.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..layers.conv_bn import ConvBN, distilled_logits, norm_linear_or_identity
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["IFormer", "SHMA"]


class Residual(nn.Module):
    """``x + drop_path(gamma * module(x))`` (``gamma``: optional per-channel LayerScale)."""

    def __init__(self, module: nn.Module, dim: int, layer_scale: Optional[float] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        if layer_scale is not None:
            self.gamma = nn.Parameter(torch.full((1, dim, 1, 1), layer_scale))
        else:
            self.gamma = None
        self.module = module
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x)
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y)


class SHMA(nn.Module):
    """Single-head modulation attention: ``proj((v softmax(q^T k / sqrt(d))^T) * gate)`` with 1x1
    conv-BN projections; ``q``/``k`` have ``qk_dim`` channels, ``v_gate`` gives value and gate, both
    through a sigmoid (the value is bounded too, the modulation is a multiplicative gate)."""

    def __init__(self, dim: int, qk_dim: int) -> None:
        super().__init__()
        self.qk_dim, self.scale = qk_dim, qk_dim ** -0.5
        self.q = ConvBN(dim, qk_dim)
        self.k = ConvBN(dim, qk_dim)
        self.v_gate = ConvBN(dim, 2 * dim)
        self.act = nn.Sigmoid()
        self.proj = ConvBN(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.q(x).flatten(2)
        k = self.k(x).flatten(2)
        v, gate = self.act(self.v_gate(x)).chunk(2, dim=1)  # both halves squashed to (0, 1)
        attn = ((q.transpose(-2, -1) * self.scale) @ k).softmax(-1)  # [b, N, N]
        out = (v.flatten(2) @ attn.transpose(-2, -1)).reshape(b, c, h, w)
        return self.proj(out * gate)


def _conv_mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(ConvBN(dim, hidden), nn.GELU(), ConvBN(hidden, dim))


def _conv_block(dim: int, ratio: float) -> nn.Sequential:
    """Depthwise 7x7 -> 1x1 expand -> GELU -> 1x1 project (indices 0, 1, 3 hold weights)."""
    hidden = int(dim * ratio)
    return nn.Sequential(ConvBN(dim, dim, 7, groups=dim), ConvBN(dim, hidden), nn.GELU(), ConvBN(hidden, dim))


class ConvBlock(nn.Module):
    """ConvNeXt-style residual conv block (``mixer``)."""

    def __init__(self, dim: int, ratio: float, layer_scale: Optional[float], drop_path: float) -> None:
        super().__init__()
        self.mixer = Residual(_conv_block(dim, ratio), dim, layer_scale, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x)


class PosBlock(nn.Module):
    """Conditional position encoding: residual depthwise 3x3 conv-BN (``cpe``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cpe = Residual(ConvBN(dim, dim, 3, groups=dim), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cpe(x)


class AttnBlock(nn.Module):
    """Residual SHMA (``mixer``)."""

    def __init__(self, dim: int, qk_dim: int, layer_scale: Optional[float], drop_path: float) -> None:
        super().__init__()
        self.mixer = Residual(SHMA(dim, qk_dim), dim, layer_scale, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x)


class FfnBlock(nn.Module):
    """Residual conv FFN (``mixer``)."""

    def __init__(self, dim: int, ratio: float, layer_scale: Optional[float], drop_path: float) -> None:
        super().__init__()
        self.mixer = Residual(_conv_mlp(dim, int(dim * ratio)), dim, layer_scale, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(x)


class IFormerStage(nn.Module):
    """Optional 3x3 stride-2 conv-BN ``downsample``, then ``blocks`` (a pattern of C/P/A/F blocks)."""

    def __init__(self, in_dim: int, dim: int, pattern: str, conv_ratio: float, ffn_ratio: float, qk_dim: int,
                 layer_scale: Optional[float], dpr: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = ConvBN(in_dim, dim, 3, 2) if in_dim != dim else nn.Identity()
        blocks = []
        for i, kind in enumerate(pattern):
            if kind == "C":
                blocks.append(ConvBlock(dim, conv_ratio, layer_scale, dpr[i]))
            elif kind == "P":
                blocks.append(PosBlock(dim))
            elif kind == "A":
                blocks.append(AttnBlock(dim, qk_dim, layer_scale, dpr[i]))
            else:
                blocks.append(FfnBlock(dim, ffn_ratio, layer_scale, dpr[i]))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class IFormerStem(nn.Module):
    """5x5 stride-2 conv-BN, GELU, 5x5 stride-2 conv-BN (to 2x width), GELU, 1x1 conv-BN."""

    def __init__(self, in_chs: int, dim: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_chs, dim // 2, 5, 2)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(dim // 2, dim * 2, 5, 2)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(dim * 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


class IFormerHead(nn.Module):
    """Pooled features -> BN-linear ``head`` (and ``head_dist`` for distilled models, averaged)."""

    def __init__(self, dim: int, num_classes: int, distilled: bool, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.distilled, self.distilled_training = distilled, False
        self.head = norm_linear_or_identity(dim, num_classes, drop_rate)
        self.head_dist = norm_linear_or_identity(dim, num_classes) if distilled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_dist is None:
            return self.head(x)
        return distilled_logits(self.head(x), self.head_dist(x), self.distilled_training and self.training)


class IFormer(FeatureMixin, ModelForwardMixin, nn.Module):
    """Stride-4 conv stem, four stages (strides 4..32) of conv / attention blocks, BN-linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, dims: Sequence[int] = (32, 64, 128, 256),
                 patterns: Sequence[str] = ("CC", "CC", "CCCCCCPAFPAFPAFC", "PAFPAF"),
                 qk_dims: Sequence[int] = (0, 0, 64, 64), conv_ratio: float = 3.0, ffn_ratio: float = 2.0,
                 layer_scale: Optional[float] = None, distilled: bool = False, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        assert global_pool in ("avg", "")
        self.num_classes, self.grad_checkpointing, self.global_pool = num_classes, False, global_pool
        self.drop_rate, self.distilled = drop_rate, distilled
        d0 = dims[0]
        self.stem = IFormerStem(in_chans, d0)
        dpr = drop_path_rates(drop_path_rate, [len(p) for p in patterns])
        stages, prev = [], d0
        for i, (dim, pattern) in enumerate(zip(dims, patterns)):
            stages.append(IFormerStage(prev, dim, pattern, conv_ratio, ffn_ratio, qk_dims[i], layer_scale, dpr[i]))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=d, reduction=2 ** (i + 2), module=f"stages.{i}") for i, d in enumerate(dims)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = IFormerHead(dims[-1], num_classes, distilled, drop_rate)

    def get_classifier(self) -> nn.Module:
        return self.head.head.l if hasattr(self.head.head, "l") else self.head.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            assert global_pool in ("avg", "")
            self.global_pool = global_pool
        self.head = IFormerHead(self.num_features, num_classes, self.distilled, self.drop_rate).train(self.training)

    def set_distilled_training(self, enable: bool = True) -> None:
        """Training mode then returns both heads' logits (for the distillation loss)."""
        self.head.distilled_training = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "":
            return x
        x = x.mean((2, 3))
        return x if pre_logits else self.head(x)


def _pat(n_conv: int, n_attn: int, tail: int = 1) -> str:
    return "C" * n_conv + "PAF" * n_attn + "C" * tail


_t = Variant(IFormer, dims=(32, 64, 128, 256), patterns=("CC", "CC", _pat(6, 3), _pat(0, 2, 0)),
             qk_dims=(0, 0, 64, 64), conv_ratio=3.0, ffn_ratio=2.0)
_s = _t.but(dims=(32, 64, 176, 320), patterns=("CC", "CC", _pat(9, 3), _pat(0, 2, 0)), qk_dims=(0, 0, 88, 80),
            conv_ratio=4.0, ffn_ratio=3.0)
_m = _s.but(dims=(48, 96, 192, 384), patterns=("CC", "CC", _pat(9, 4), _pat(0, 2, 0)), qk_dims=(0, 0, 96, 96))
_l = _s.but(dims=(48, 96, 256, 384), patterns=("CC", "CC", _pat(8, 8), _pat(0, 2, 0)), qk_dims=(0, 0, 128, 96))
_l2 = _s.but(dims=(64, 128, 256, 512), patterns=("CCC", "CCC", _pat(12, 11), _pat(0, 3, 0)),
             qk_dims=(0, 0, 128, 128))
_h = _s.but(dims=(96, 192, 384, 768), patterns=("C" * 5, "C" * 5, _pat(14, 15), _pat(0, 6, 0)),
            qk_dims=(0, 0, 384, 768), ffn_ratio=4.0, layer_scale=1e-6)
VARIANTS: dict[str, Variant] = {
    "iformer_t": _t,
    "iformer_s": _s,
    "iformer_m": _m,
    "iformer_m_distilled": _m.but(distilled=True),
    "iformer_l": _l,
    "iformer_l_distilled": _l.but(distilled=True),
    "iformer_l2": _l2,
    "iformer_l2_distilled": _l2.but(distilled=True),
    "iformer_h": _h,
}
register_family("iformer", VARIANTS)
