"""MobileViT v1 (Mehta & Rastegari, ICLR 2022, arXiv:2110.02178) and v2 (separable self-attention,
arXiv:2206.02680), as bring-your-own-blocks nets.

Both are MobileNetV2 inverted-residual stages (byobnet ``bottle`` blocks with depthwise 3x3 and a
linear output) with a MobileViT block closing each of the last three stages. The block models
local structure with convs and global structure with a transformer over *patches*: the map is
cut into ``2x2`` patches, and the pixels at the same position of every patch form one sequence.

* v1: ``3x3 conv -> 1x1 to d``, pre-norm transformer blocks (multi-head attention, SiLU MLP),
  LayerNorm, ``1x1`` back, and a ``3x3`` fusion conv over ``[input, output]``;
* v2: depthwise ``3x3 -> 1x1``, *linear* self-attention (one context score per patch from a
  softmax over patches, ``relu(v) * sum(k * score)``) with 1x1-conv MLPs and GroupNorm(1), and a
  ``1x1`` projection (no fusion conv). Widths scale with a multiplier.

The nets are :class:`~visionzoo.models.byobnet.ByobNet` specs; the MobileViT blocks are added to its
block table under ``mobilevit`` / ``mobilevit2``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath
from ..layers.mlp import Mlp
from ..layers.norm import GroupNorm1
from . import byobnet
from .base import Variant
from .byobnet import BlockSpec, ByobNet, LayerEnv, NetSpec
from .vision_transformer import Block as TransformerBlock
from .base import register_family

__all__ = ["MobileVitBlock", "MobileVitV2Block", "LinearSelfAttention"]


def _to_patches(x: torch.Tensor, ph: int, pw: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, C, H, W]`` -> ``[B, C, ph * pw, num_patches]`` (resized up to whole patches first)."""
    b, c, h, w = x.shape
    nh, nw = math.ceil(h / ph), math.ceil(w / pw)
    if nh * ph != h or nw * pw != w:
        x = F.interpolate(x, size=(nh * ph, nw * pw), mode="bilinear", align_corners=False)
    x = x.reshape(b, c, nh, ph, nw, pw).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c, ph * pw, nh * nw), (nh, nw)


def _from_patches(x: torch.Tensor, grid: tuple[int, int], ph: int, pw: int, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`_to_patches` (resized back to ``size``)."""
    b, c = x.shape[0], x.shape[1]
    nh, nw = grid
    x = x.reshape(b, c, ph, pw, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, c, nh * ph, nw * pw)
    if nh * ph != size[0] or nw * pw != size[1]:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x


class MobileVitBlock(nn.Module):
    """v1: local ``3x3`` conv, ``1x1`` to ``transformer_dim``, transformer over patch sequences,
    LayerNorm, ``1x1`` back (``conv_proj``) and ``3x3`` ``conv_fusion`` of ``[input, output]``."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 bottle: float = 1.0, group_size: int = 0, transformer_dim: int = 0, transformer_depth: int = 2,
                 patch_size: int = 2, num_heads: int = 4, mlp_ratio: float = 2.0, drop_path_rate: float = 0.0,
                 **_: Any) -> None:
        super().__init__()
        groups = in_chs // group_size if group_size else 1
        dim = transformer_dim or int(out_chs * bottle)
        self.patch_size = patch_size
        self.conv_kxk = env.cna(in_chs, in_chs, kernel_size, stride=stride, groups=groups)
        self.conv_1x1 = nn.Conv2d(in_chs, dim, 1, bias=False)
        self.transformer = nn.Sequential(*[
            TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, act_layer=env.act_layer,
                             norm_layer=nn.LayerNorm, drop_path=drop_path_rate)
            for _ in range(transformer_depth)])
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = env.cna(dim, out_chs, 1)
        self.conv_fusion = env.cna(in_chs + out_chs, out_chs, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        size = (x.shape[-2], x.shape[-1])
        p = self.patch_size
        x, grid = _to_patches(x, p, p)  # [B, C, P, N]
        b, c, pa, n = x.shape
        x = x.permute(0, 2, 3, 1).reshape(b * pa, n, c)  # one sequence per position inside a patch
        x = self.norm(self.transformer(x))
        x = x.reshape(b, pa, n, c).permute(0, 3, 1, 2)
        x = self.conv_proj(_from_patches(x, grid, p, p, size))
        return self.conv_fusion(torch.cat([shortcut, x], dim=1))


class LinearSelfAttention(nn.Module):
    """Separable self-attention (MobileViT v2) on ``[B, C, P, N]``: ``qkv_proj`` gives one query
    channel and ``C`` key / value channels; the softmax of the query over the ``N`` patches weights
    the keys into one context vector per patch position, which gates ``relu(v)``; ``out_proj``."""

    def __init__(self, dim: int, bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.qkv_proj = nn.Conv2d(dim, 1 + 2 * dim, 1, bias=bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.out_proj = nn.Conv2d(dim, dim, 1, bias=bias)
        self.out_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([1, self.dim, self.dim], dim=1)
        scores = self.attn_drop(q.softmax(dim=-1))
        context = (k * scores).sum(dim=-1, keepdim=True)
        return self.out_drop(self.out_proj(F.relu(v) * context))


class LinearTransformerBlock(nn.Module):
    """Pre-norm (GroupNorm(1)) separable attention and 1x1-conv MLP, both residual."""

    def __init__(self, dim: int, mlp_ratio: float, act_layer: type, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.attn = LinearSelfAttention(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = GroupNorm1(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, use_conv=True)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class MobileVitV2Block(nn.Module):
    """v2: depthwise ``3x3``, ``1x1`` to ``bottle * out`` channels, separable-attention transformer
    over patches, GroupNorm(1), ``1x1`` projection (no activation, no fusion conv)."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 bottle: float = 0.5, group_size: int = 1, transformer_depth: int = 2, patch_size: int = 2,
                 mlp_ratio: float = 2.0, drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        groups = in_chs // group_size if group_size else 1
        dim = int(out_chs * bottle)
        self.patch_size = patch_size
        self.conv_kxk = env.cna(in_chs, in_chs, kernel_size, stride=stride, groups=groups)
        self.conv_1x1 = nn.Conv2d(in_chs, dim, 1, bias=False)
        self.transformer = nn.Sequential(*[LinearTransformerBlock(dim, mlp_ratio, env.act_layer, drop_path_rate)
                                           for _ in range(transformer_depth)])
        self.norm = GroupNorm1(dim)
        self.conv_proj = env.cna(dim, out_chs, 1, apply_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1x1(self.conv_kxk(x))
        size = (x.shape[-2], x.shape[-1])
        p = self.patch_size
        x, grid = _to_patches(x, p, p)
        x = self.norm(self.transformer(x))
        return self.conv_proj(_from_patches(x, grid, p, p, size))


# the byobnet block table gains the two MobileViT blocks (new names; existing entries untouched)
byobnet._BLOCKS.setdefault("mobilevit", MobileVitBlock)
byobnet._BLOCKS.setdefault("mobilevit2", MobileVitV2Block)

B = BlockSpec


def _ir(d: int, c: int, s: int, br: float) -> BlockSpec:
    """MobileNetV2 inverted residual: ``bottle`` block, depthwise, expansion on the input, linear out."""
    return B("bottle", d, c, s, group_size=1, bottle=br, kwargs=dict(bottle_in=True, linear_out=True))


def _v1(chs: tuple[int, ...], dims: tuple[int, int, int], br: float, num_features: int) -> NetSpec:
    blocks = (_ir(1, chs[0], 1, br), _ir(3, chs[1], 2, br)) + tuple(
        (_ir(1, c, 2, br), B("mobilevit", 1, c, 1, kwargs=dict(transformer_dim=dim, transformer_depth=depth)))
        for c, dim, depth in zip(chs[2:], dims, (2, 4, 3)))
    return NetSpec(blocks=blocks, stem_type="3x3", stem_pool="", stem_chs=16, act="silu",
                   num_features=num_features, downsample="")


def _v2(m: float) -> NetSpec:
    c = [int(v * m) for v in (64, 128, 256, 384, 512)]
    blocks = (_ir(1, c[0], 1, 2.0), _ir(2, c[1], 2, 2.0)) + tuple(
        (_ir(1, ch, 2, 2.0), B("mobilevit2", 1, ch, 1, group_size=1, bottle=0.5,
                                kwargs=dict(transformer_depth=depth)))
        for ch, depth in zip(c[2:], (2, 4, 3)))
    return NetSpec(blocks=blocks, stem_type="3x3", stem_pool="", stem_chs=int(32 * m), act="silu",
                   num_features=0, downsample="")


def _v(cfg: NetSpec) -> Variant:
    return Variant(ByobNet, cfg=cfg)


VARIANTS: dict[str, Variant] = {
    "mobilevit_xxs": _v(_v1((16, 24, 48, 64, 80), (64, 80, 96), 2.0, 320)),
    "mobilevit_xs": _v(_v1((32, 48, 64, 80, 96), (96, 120, 144), 4.0, 384)),
    "mobilevit_s": _v(_v1((32, 64, 96, 128, 160), (144, 192, 240), 4.0, 640)),
    **{f"mobilevitv2_{int(m * 100):03d}": _v(_v2(m)) for m in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)},
}
register_family("mobilevit", VARIANTS)
