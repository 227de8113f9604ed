"""EfficientFormerV2 ("Rethinking Vision Transformers for MobileNet Size and Speed", Li et al.,
ICCV 2023, https://arxiv.org/abs/2212.08059).

Fully 4-D (NCHW, conv+BN everywhere) successor of EfficientFormer. Every block has a feed-forward
with a 3x3 depthwise conv between its 1x1 convs; the last blocks of stages 3 and 4 also attend:
multi-head attention with learned offset biases, talking-heads mixing before and after the softmax
and a depthwise-conv "local value" added to the attention output. Stage 3 attends on a
stride-2 grid (strided dw conv in, bilinear upsampling out); the stage-4 downsampling adds an
attention branch whose queries are a pooled + strided-conv (local-global) summary. Fixed input
size (the bias tables follow the grid); distilled, averaged heads behind a BatchNorm.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention_bias import offset_bias_index
from ..layers.conv_norm_act import ConvNormAct
from ..layers.distill import DistilledHeadsMixin
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.layer_scale import LayerScale2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["EfficientFormerV2", "Attention2d", "Attention2dDownsample"]


def _cn(in_chs: int, out_chs: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = False) -> ConvNormAct:
    """Biased conv + BN (``conv`` / ``bn``), GELU when ``act``."""
    return ConvNormAct(in_chs, out_chs, k, stride=stride, padding=k // 2, groups=groups, bias=True,
                       apply_act=act, act_layer=nn.GELU)


class _BiasedAttention(nn.Module):
    """Shared parts: k / v / local-v / proj convs and an offset-bias table on a ``res x res`` key grid."""

    def __init__(self, dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int,
                 q_size: int, v_stride: int) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.scale = num_heads, key_dim, key_dim ** -0.5
        self.resolution, self.q_size, self.q_stride = resolution, q_size, resolution // q_size
        self.dh = int(attn_ratio * key_dim) * num_heads
        self.kh = key_dim * num_heads
        self.dim, self.out_dim, self.v_stride = dim, out_dim, v_stride

    def _add_kv(self) -> None:
        self.k = _cn(self.dim, self.kh)
        self.v = _cn(self.dim, self.dh)
        self.v_local = _cn(self.dh, self.dh, 3, stride=self.v_stride, groups=self.dh)

    def _add_bias(self) -> None:
        r = self.resolution
        self.attention_biases = nn.Parameter(torch.zeros(self.num_heads, r * r))
        self.register_buffer("attention_bias_idxs", self._index(), persistent=False)

    def _index(self) -> torch.Tensor:
        r, q = self.resolution, self.q_size
        return offset_bias_index((q, q), (r, r), r, stride=self.q_stride, device=self.attention_biases.device)

    def init_non_persistent_buffers(self) -> None:
        self.attention_bias_idxs = self._index()

    def _softmax(self, attn: torch.Tensor) -> torch.Tensor:
        return attn.softmax(dim=-1)

    def _attend(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h, nq, nk = self.num_heads, self.q_size * self.q_size, self.resolution * self.resolution
        q = q.reshape(b, h, -1, nq).transpose(-2, -1)
        k = self.k(x).reshape(b, h, -1, nk)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(b, h, -1, nk).transpose(-2, -1)
        attn = self._softmax((q @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs])
        out = (attn @ v).transpose(2, 3).reshape(b, self.dh, self.q_size, self.q_size)
        return out + v_local


class Attention2d(_BiasedAttention):
    """Talking-heads attention with offset biases and a local-value conv; with ``stride`` it attends
    on a strided grid (3x3 dw conv-BN in, bilinear upsampling out)."""

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4.0,
                 resolution: int = 7, stride: Optional[int] = None) -> None:
        if stride is not None:
            resolution = math.ceil(resolution / stride)
        super().__init__(dim, dim, key_dim, num_heads, attn_ratio, resolution, resolution, 1)
        self.stride = stride
        if stride is not None:
            self.stride_conv = _cn(dim, dim, 3, stride=stride, groups=dim)
            self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear")
        else:
            self.stride_conv = self.upsample = None
        self._add_bias()
        self.q = _cn(dim, self.kh)
        self._add_kv()
        self.talking_head1 = nn.Conv2d(num_heads, num_heads, 1)
        self.talking_head2 = nn.Conv2d(num_heads, num_heads, 1)
        self.act = nn.GELU()
        self.proj = _cn(self.dh, dim)

    def _softmax(self, attn: torch.Tensor) -> torch.Tensor:
        # talking heads: mix the heads' logits before and their probabilities after the softmax
        return self.talking_head2(self.talking_head1(attn).softmax(dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        x = self._attend(self.q(x), x)
        if self.upsample is not None:
            x = self.upsample(x)
        return self.proj(self.act(x))


class LocalGlobalQuery(nn.Module):
    """Downsampled queries: strided 3x3 dw conv + stride-2 sampling, then a 1x1 conv-BN."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim)
        self.proj = _cn(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.local(x) + self.pool(x))


class Attention2dDownsample(_BiasedAttention):
    """Stride-2 attention: local-global queries on the half-resolution grid attend to all keys."""

    def __init__(self, dim: int, out_dim: int, key_dim: int = 16, num_heads: int = 8, attn_ratio: float = 4.0,
                 resolution: int = 14) -> None:
        super().__init__(dim, out_dim, key_dim, num_heads, attn_ratio, resolution, math.ceil(resolution / 2), 2)
        self._add_bias()
        self.q = LocalGlobalQuery(dim, self.kh)
        self._add_kv()
        self.act = nn.GELU()
        self.proj = _cn(self.dh, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self._attend(self.q(x), x)))


class Downsample(nn.Module):
    """Stride-2 3x3 conv-BN, plus (``use_attn``) the downsampling attention branch."""

    def __init__(self, in_chs: int, out_chs: int, resolution: int, use_attn: bool) -> None:
        super().__init__()
        self.conv = _cn(in_chs, out_chs, 3, stride=2)
        self.attn = Attention2dDownsample(in_chs, out_chs, resolution=resolution) if use_attn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out + self.attn(x) if self.attn is not None else out


class ConvMlpWithNorm(nn.Module):
    """1x1 conv-BN-GELU -> 3x3 dw conv-BN-GELU -> 1x1 conv-BN."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = _cn(dim, hidden, act=True)
        self.mid = _cn(hidden, hidden, 3, groups=hidden, act=True)
        self.drop = nn.Dropout(drop)
        self.fc2 = _cn(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.mid(self.fc1(x)))))


class EfficientFormerV2Block(nn.Module):
    """``[x + ls1 * attn(x)]``, then ``x + ls2 * mlp(x)``."""

    def __init__(self, dim: int, mlp_ratio: float, resolution: int, stride: Optional[int], use_attn: bool,
                 drop_path: float = 0.0, ls_init: float = 1e-5) -> None:
        super().__init__()
        if use_attn:
            self.token_mixer = Attention2d(dim, resolution=resolution, stride=stride)
            self.ls1 = LayerScale2d(dim, ls_init)
        else:
            self.token_mixer = self.ls1 = None
        self.mlp = ConvMlpWithNorm(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale2d(dim, ls_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.ls2(self.mlp(x)))


class EfficientFormerV2Stage(nn.Module):
    def __init__(self, in_chs: int, dim: int, mlp_ratios: Sequence[float], resolution: int, downsample: bool,
                 downsample_attn: bool, block_stride: Optional[int], num_attn: int, dp_rates: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_chs, dim, resolution, downsample_attn) if downsample else nn.Identity()
        if downsample:
            resolution = math.ceil(resolution / 2)
        depth = len(mlp_ratios)
        self.blocks = nn.Sequential(*[
            EfficientFormerV2Block(dim, mlp_ratios[i], resolution, block_stride, i >= depth - num_attn, dp_rates[i])
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class EfficientFormerV2(DistilledHeadsMixin, FeatureMixin, ModelForwardMixin, nn.Module):
    """Two-conv stride-4 stem, four conv stages (attention in the last blocks of stages 3-4),
    BatchNorm, mean pool, distilled linear heads."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False
    _norm_is_final = True

    def __init__(self, *, embed_dims: Sequence[int] = (32, 48, 96, 176),
                 mlp_ratios: Sequence[Sequence[float]] = ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4)),
                 num_attn: Sequence[int] = (0, 0, 2, 2), img_size: int = 224, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"EfficientFormerV2 pools by mean ('avg') or not at all (''), got {global_pool!r}")
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.global_pool, self.drop_rate = global_pool, drop_rate
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", _cn(in_chans, embed_dims[0] // 2, 3, stride=2, act=True))
        self.stem.add_module("conv2", _cn(embed_dims[0] // 2, embed_dims[0], 3, stride=2, act=True))
        depths = [len(r) for r in mlp_ratios]
        dpr = drop_path_rates(drop_path_rate, depths)
        stages, stride = [], 4
        for i in range(len(depths)):
            stages.append(EfficientFormerV2Stage(
                embed_dims[max(i - 1, 0)], embed_dims[i], mlp_ratios[i], math.ceil(img_size / stride), i > 0,
                i >= 3, 2 if i == 2 else None, num_attn[i], dpr[i]))
            stride *= 2 if i > 0 else 1
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.norm = nn.BatchNorm2d(self.num_features)
        self._init_heads(num_classes)


    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = F.dropout(x, self.drop_rate, self.training)
        if pre_logits:
            return x
        return self._distilled_heads(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()


def _ratios(*stage3_4: Sequence[int], early: Sequence[int]) -> tuple:
    return tuple((4,) * n for n in early) + tuple(stage3_4)


VARIANTS: dict[str, Variant] = {
    "efficientformerv2_s0": Variant(EfficientFormerV2, embed_dims=(32, 48, 96, 176), num_attn=(0, 0, 2, 2),
                                    mlp_ratios=_ratios((4, 3, 3, 3, 4, 4), (4, 3, 3, 4), early=(2, 2))),
    "efficientformerv2_s1": Variant(EfficientFormerV2, embed_dims=(32, 48, 120, 224), num_attn=(0, 0, 2, 2),
                                    mlp_ratios=_ratios((4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4),
                                                       early=(3, 3))),
    "efficientformerv2_s2": Variant(EfficientFormerV2, embed_dims=(32, 64, 144, 288), num_attn=(0, 0, 4, 4),
                                    mlp_ratios=_ratios((4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                                       (4, 4, 3, 3, 3, 3, 4, 4), early=(4, 4))),
    "efficientformerv2_l": Variant(EfficientFormerV2, embed_dims=(40, 80, 192, 384), num_attn=(0, 0, 6, 6),
                                   mlp_ratios=_ratios((4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                                                      (4, 4, 4, 3, 3, 3, 3, 4, 4, 4), early=(5, 5))),
}
register_family("efficientformer_v2", VARIANTS)
