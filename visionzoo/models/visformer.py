"""Visformer ("Visformer: The Vision-friendly Transformer", Chen et al. 2021).

A ViT made friendlier to small data and to BatchNorm: a conv stem (7x7 stride 2 + BN + ReLU),
then three stages at strides 8/16/32, each opened by a strided patch-embedding conv + BN and a
learned position map. Every block keeps the feature map in NCHW and normalises with BatchNorm.
Stage 1 has no attention, only a conv MLP with a grouped 3x3 conv between its 1x1 convs (and half
the MLP ratio); stages 2 and 3 add multi-head self-attention computed by 1x1 convs over the
flattened grid.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.linear_head import PoolLinearHeadMixin
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["Visformer"]


class _ConvMlp(nn.Module):
    """1x1 conv -> GELU -> (grouped 3x3 conv -> GELU) -> 1x1 conv, all bias-free, on NCHW maps."""

    def __init__(self, dim: int, hidden: int, groups: int, spatial_conv: bool, drop: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, hidden, 1, bias=False)
        self.act1 = nn.GELU()
        self.drop = nn.Dropout(drop)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1, groups=groups, bias=False) if spatial_conv else None
        self.act2 = nn.GELU()
        self.conv3 = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act1(self.conv1(x)))
        if self.conv2 is not None:
            x = self.act2(self.conv2(x))
        return self.drop(self.conv3(x))


class _ConvAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a map; q/k/v and the output projection
    are bias-free 1x1 convs, so the block never leaves NCHW."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, 3, self.num_heads, self.head_dim, h * w).permute(1, 0, 2, 4, 3)
        q, k, v = qkv.unbind(0)  # (B, heads, N, head_dim)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).permute(0, 1, 3, 2).reshape(b, c, h, w)
        return self.proj_drop(self.proj(x))


class _Block(nn.Module):
    """Pre-norm residual block with BatchNorm; ``attn=False`` leaves only the MLP branch."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, groups: int, attn: bool, spatial_conv: bool,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if attn:
            self.norm1 = nn.BatchNorm2d(dim)
            self.attn = _ConvAttention(dim, num_heads, attn_drop, drop)
        else:
            self.norm1, self.attn = None, None
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = _ConvMlp(dim, mlp_hidden, groups, spatial_conv, drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None and self.norm1 is not None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    """Strided conv (kernel = stride) + BatchNorm, NCHW in and out."""

    def __init__(self, in_chs: int, out_chs: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, patch, stride=patch)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class Visformer(FeatureMixin, PoolLinearHeadMixin, ModelForwardMixin, nn.Module):
    """Conv stem, a conv-MLP stage at stride 8, then two attention stages at strides 16 and 32;
    each stage end is one feature level. Final BatchNorm, global pool and a linear head."""

    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}
    _stem_level = False

    def __init__(self, *, embed_dim: int = 384, stem_chs: int = 32, depths: tuple[int, ...] = (7, 4, 4),
                 num_heads: int = 6, mlp_ratio: float = 4.0, groups: int = 8,
                 attn_stages: tuple[bool, ...] = (False, True, True),
                 spatial_conv: tuple[bool, ...] = (True, False, False), img_size: int = 224,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        dims = (embed_dim // 2, embed_dim, embed_dim * 2)
        grid = img_size // 8
        self.pos_embed1 = nn.Parameter(torch.zeros(1, dims[0], grid, grid))
        self.pos_embed2 = nn.Parameter(torch.zeros(1, dims[1], grid // 2, grid // 2))
        self.pos_embed3 = nn.Parameter(torch.zeros(1, dims[2], grid // 4, grid // 4))
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_chs, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(stem_chs), nn.ReLU(inplace=True))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, list(depths))
        in_chs = stem_chs
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            # stage 1 runs at 4x the tokens of stage 2: the paper halves its MLP ratio
            hidden = int(dim * (mlp_ratio / 2 if i == 0 else mlp_ratio))
            setattr(self, f"patch_embed{i + 1}", _PatchEmbed(in_chs, dim, 4 if i == 0 else 2))
            setattr(self, f"stage{i + 1}", nn.Sequential(*[
                _Block(dim, num_heads, hidden, groups, attn_stages[i], spatial_conv[i], proj_drop_rate,
                       attn_drop_rate, dpr[i][j]) for j in range(depth)]))
            in_chs = dim
        self.norm = nn.BatchNorm2d(dims[-1])
        self.feature_info = [dict(num_chs=d, reduction=8 * 2 ** i, module=f"stage{i + 1}") for i, d in enumerate(dims)]
        self.num_features = self.head_hidden_size = dims[-1]
        self._init_pool_linear_head(num_classes, global_pool, drop_rate)
        self._num_stages = len(dims)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.pos_embed1, self.pos_embed2, self.pos_embed3):
            trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):  # transformer-style init keeps attention logits small
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --- trunk ----------------------------------------------------------------------------------
    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled()

    def _add_pos(self, x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
        if pos is None:
            return x
        if pos.shape[-2:] != x.shape[-2:]:  # another input size: resample the learned map
            pos = F.interpolate(pos, size=(x.shape[-2], x.shape[-1]), mode="bilinear", align_corners=False)
        return self.pos_drop(x + pos)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.stage1, self._add_pos(self.patch_embed1(x), self.pos_embed1))
            x = checkpoint_seq(self.stage2, self._add_pos(self.patch_embed2(x), self.pos_embed2))
            x = checkpoint_seq(self.stage3, self._add_pos(self.patch_embed3(x), self.pos_embed3))
        else:
            x = self.stage1(self._add_pos(self.patch_embed1(x), self.pos_embed1))
            x = self.stage2(self._add_pos(self.patch_embed2(x), self.pos_embed2))
            x = self.stage3(self._add_pos(self.patch_embed3(x), self.pos_embed3))
        return self.norm(x)

    # FeatureMixin hooks: trunk module i is stage i+1, entered through its patch embed + position map
    def _feature_stages(self) -> list[nn.Module]:
        return [getattr(self, f"stage{i + 1}") for i in range(self._num_stages)]

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, f"patch_embed{index + 1}")(x)
        x = self._add_pos(x, getattr(self, f"pos_embed{index + 1}"))
        return checkpoint_seq(stage, x) if self._checkpointing() else stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        for i in range(num_stages, 3):
            setattr(self, f"pos_embed{i + 1}", None)
            setattr(self, f"patch_embed{i + 1}", nn.Identity())
            setattr(self, f"stage{i + 1}", nn.Sequential())
        self._num_stages = num_stages
        if prune_norm:
            self.norm = nn.Identity()

    def _prune_head(self) -> None:
        # the reference's features wrapper drops the final norm together with the classifier
        self.norm = nn.Identity()
        self.reset_classifier(0, "")


_small = Variant(Visformer, embed_dim=384, stem_chs=32, depths=(7, 4, 4), num_heads=6, mlp_ratio=4.0, groups=8)
VARIANTS: dict[str, Variant] = {
    "visformer_small": _small,
    "visformer_tiny": _small.but(embed_dim=192, stem_chs=16, num_heads=3),
}
register_family("visformer", VARIANTS)
