"""EfficientFormer ("EfficientFormer: Vision Transformers at MobileNet Speed", Li et al., NeurIPS
2022, https://arxiv.org/abs/2206.01191).

A latency-driven MetaFormer: the first three and a half stages are 4-D ``Meta4D`` blocks (pooling
token mixer ``avgpool3x3(x) - x`` and a 1x1-conv MLP with BN, both layer-scaled residuals) on NCHW
maps; the last stage flattens to tokens and ends in ``Meta3D`` blocks (pre-LN multi-head attention
with a learned offset bias table, as in LeViT, and a linear MLP). Distilled: at inference the two
heads are averaged.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention_bias import offset_bias_index, resample_offset_bias
from ..layers.distill import DistilledHeadsMixin
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.layer_scale import LayerScale, LayerScale2d
from ..layers.mlp import Mlp
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["EfficientFormer"]


class OffsetBiasAttention(nn.Module):
    """Multi-head self-attention on a ``res x res`` token grid with a learned bias per head and
    absolute offset; values are ``attn_ratio`` times wider than keys."""

    def __init__(self, dim: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4.0,
                 resolution: int = 7) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.resolution = num_heads, key_dim, resolution
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(num_heads * self.val_dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        # persistent: published checkpoints carry the index table
        self.register_buffer("attention_bias_idxs", self._index())

    def _index(self) -> torch.Tensor:
        r = self.resolution
        return offset_bias_index((r, r), (r, r), r, device=self.attention_biases.device)

    def init_non_persistent_buffers(self) -> None:
        self.attention_bias_idxs = self._index()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.val_dim)
        return self.proj(x)


class ConvMlpBN(nn.Module):
    """1x1 conv -> BN -> GELU -> 1x1 conv -> BN (the Meta4D feed-forward)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.norm1(self.fc1(x))))
        return self.drop(self.norm2(self.fc2(x)))


class Meta4D(nn.Module):
    """``x + g1 * (avgpool(x) - x)``, then ``x + g2 * mlp(x)`` on NCHW maps."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, ls_init: float = 1e-5) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.ls1 = LayerScale2d(dim, ls_init)
        self.mlp = ConvMlpBN(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale2d(dim, ls_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.pool(x) - x))
        return x + self.drop_path(self.ls2(self.mlp(x)))


class Flat(nn.Module):
    """NCHW map -> ``[B, H*W, C]`` tokens (where a stage switches to Meta3D blocks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class Meta3D(nn.Module):
    """Pre-LN transformer block on tokens: offset-bias attention and a GELU MLP, layer-scaled."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, ls_init: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = OffsetBiasAttention(dim)
        self.ls1 = LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, ls_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class Downsample(nn.Module):
    """Stride-2 3x3 conv + BN between stages."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class EfficientFormerStage(nn.Module):
    """Optional downsample, Meta4D blocks, and (last stage) ``Flat`` + ``num_vit`` Meta3D blocks."""

    def __init__(self, in_chs: int, dim: int, depth: int, downsample: bool, num_vit: int, mlp_ratio: float,
                 dp_rates, ls_init: float = 1e-5) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_chs, dim) if downsample else nn.Identity()
        blocks: list[nn.Module] = [Meta4D(dim, mlp_ratio, dp_rates[i], ls_init) for i in range(depth - num_vit)]
        if num_vit:
            blocks.append(Flat())
            blocks += [Meta3D(dim, mlp_ratio, dp_rates[i], ls_init) for i in range(depth - num_vit, depth)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class EfficientFormer(DistilledHeadsMixin, FeatureMixin, ModelForwardMixin, nn.Module):
    """Conv stem (stride 4), four stages (strides 4..32; the last ends in tokens), LayerNorm,
    token-mean pool and a distilled linear head."""

    feature_cfg = {"feature_cls": "getter"}
    _stem_level = False
    _norm_is_final = True

    def __init__(self, *, depths=(3, 2, 6, 4), embed_dims=(48, 96, 224, 448), num_vit: int = 1,
                 mlp_ratio: float = 4.0, layer_scale_init: float = 1e-5, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"EfficientFormer pools by token mean ('avg') or not at all (''), got {global_pool!r}")
        self.num_classes, self.grad_checkpointing, self.drop_rate = num_classes, False, drop_rate
        self.global_pool = global_pool
        d0 = embed_dims[0]
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", nn.Conv2d(in_chans, d0 // 2, 3, stride=2, padding=1))
        self.stem.add_module("norm1", nn.BatchNorm2d(d0 // 2))
        self.stem.add_module("act1", nn.ReLU())
        self.stem.add_module("conv2", nn.Conv2d(d0 // 2, d0, 3, stride=2, padding=1))
        self.stem.add_module("norm2", nn.BatchNorm2d(d0))
        self.stem.add_module("act2", nn.ReLU())
        dpr = drop_path_rates(drop_path_rate, list(depths))
        last = len(depths) - 1
        self.stages = nn.Sequential(*[
            EfficientFormerStage(embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], i > 0,
                                 num_vit if i == last else 0, mlp_ratio, dpr[i], layer_scale_init)
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self._init_heads(num_classes)


    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self._final(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = F.dropout(x, self.drop_rate, self.training)
        if pre_logits:
            return x
        return self._distilled_heads(x)

    # FeatureMixin hooks
    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if x.ndim == 3 else x

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if x.ndim == 3:  # last stage: tokens -> NCHW grid of the stride-32 map
            if norm and is_last:
                x = self.norm(x)
            h, w = in_size
            for _ in range(5):
                h, w = (h + 1) // 2, (w + 1) // 2
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
        return x

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
        """Resample offset-bias tables to the model's grid and rebuild their index tables."""
        own = model.state_dict()
        out = {}
        for k, v in state_dict.items():
            if k in own and k.endswith("attention_biases") and own[k].shape != v.shape:
                v = resample_offset_bias(v, int(math.isqrt(own[k].shape[1])))
            elif k in own and k.endswith("attention_bias_idxs") and own[k].shape != v.shape:
                v = own[k]
            out[k] = v
        return out


_l1 = Variant(EfficientFormer, depths=(3, 2, 6, 4), embed_dims=(48, 96, 224, 448), num_vit=1)
VARIANTS: dict[str, Variant] = {
    "efficientformer_l1": _l1,
    "efficientformer_l3": _l1.but(depths=(4, 4, 12, 6), embed_dims=(64, 128, 320, 512), num_vit=4),
    "efficientformer_l7": _l1.but(depths=(6, 6, 18, 8), embed_dims=(96, 192, 384, 768), num_vit=8),
}
register_family("efficientformer", VARIANTS)
