"""Twins ("Twins: Revisiting the Design of Spatial Attention in Vision Transformers", Chu et al. 2021).

Two four-stage pyramids (strides 4/8/16/32, non-overlapping patch embeddings + LayerNorm between
stages), both with a conditional position encoding: a 3x3 depthwise conv with a residual (PEG)
after the first block of every stage, in place of fixed position embeddings.

* Twins-PCPVT: every block is PVT's spatial-reduction (global sub-sampled) attention.
* Twins-SVT: blocks alternate locally-grouped self-attention (LSA: attention inside
  non-overlapping ``ws x ws`` windows) and global sub-sampled attention (GSA: keys/values from an
  ``sr x sr`` strided-conv summary of the map, one representative per window).

Blocks run on channels-last maps; the final LayerNorm acts on the last stage's tokens, which are
average-pooled for the linear head.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention import Attention, scaled_dot_product_attention
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pool import pool_tokens
from ..layers.sr_attention import SpatialReductionAttention
from ..layers.window_attention import window_partition, window_reverse
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .pvt_v2 import init_pvt_weights

__all__ = ["Twins", "LocallyGroupedAttention"]


class LocallyGroupedAttention(Attention):
    """LSA: multi-head self-attention inside each ``ws x ws`` window of a ``[B, H, W, C]`` map.

    A map that the window does not divide is zero-padded at the bottom/right; the padded
    positions take part in attention as (bias-only) tokens and are cropped afterwards.
    """

    def __init__(self, dim: int, num_heads: int = 8, ws: int = 7, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ws = ws

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, h, w, c = x.shape
        pad_h, pad_w = (self.ws - h % self.ws) % self.ws, (self.ws - w % self.ws) % self.ws
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        n = self.ws * self.ws
        windows = window_partition(x, (self.ws, self.ws)).reshape(-1, n, c)
        # Attention's projections on each window (written out: TorchScript has no super().forward)
        q, k, v = self.qkv(windows).reshape(-1, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        windows = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=attn_mask,
                                               dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        windows = self.proj_drop(self.proj(windows.transpose(1, 2).reshape(-1, n, c)))
        x = window_reverse(windows.reshape(-1, self.ws, self.ws, c), (self.ws, self.ws), hp, wp)
        return x[:, :h, :w, :].contiguous()


class TwinsBlock(nn.Module):
    """Pre-norm transformer block; the attention is LSA (``ws > 1``) or GSA/SRA (``ws == 1``)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, ws: int = 1,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if ws > 1:
            self.attn: nn.Module = LocallyGroupedAttention(dim, num_heads, ws, attn_drop=attn_drop,
                                                           proj_drop=proj_drop)
        else:
            self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PosConv(nn.Module):
    """PEG (conditional position encoding): ``x + dwconv3x3(x)`` on a channels-last map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Twins(FeatureMixin, ModelForwardMixin, nn.Module):
    """Four stages of [patch embed -> block 0 -> PEG -> blocks 1..], final LayerNorm over the last
    stage's tokens, token average pool, linear head. ``wss=None``: PCPVT (every block SRA);
    otherwise SVT (even blocks LSA with window ``wss[i]``, odd blocks GSA)."""

    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}
    _stem_level = False

    def __init__(self, *, depths: tuple[int, ...] = (3, 4, 6, 3), embed_dims: tuple[int, ...] = (64, 128, 320, 512),
                 num_heads: tuple[int, ...] = (1, 2, 5, 8), mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0),
                 sr_ratios: tuple[int, ...] = (8, 4, 2, 1), wss: Optional[tuple[int, ...]] = None,
                 patch_size: int = 4, img_size: int | tuple[int, int] = 224, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.global_pool, self.grad_checkpointing = num_classes, global_pool, False
        self.num_stages = len(depths)
        in_chs = (in_chans,) + tuple(embed_dims[:-1])
        self.patch_embeds = nn.ModuleList([
            PatchEmbed(img_size if i == 0 else None, patch_size if i == 0 else 2, in_chs[i], embed_dims[i],
                       norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False)
            for i in range(self.num_stages)])
        self.pos_drops = nn.ModuleList([nn.Dropout(pos_drop_rate) for _ in range(self.num_stages)])
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.blocks = nn.ModuleList([nn.ModuleList([
            TwinsBlock(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i],
                       ws=1 if wss is None or j % 2 == 1 else wss[i], proj_drop=proj_drop_rate,
                       attn_drop=attn_drop_rate, drop_path=dpr[i][j]) for j in range(depths[i])])
            for i in range(self.num_stages)])
        self.pos_block = nn.ModuleList([PosConv(d) for d in embed_dims])
        # weightless taps at the stage ends: the reference's feature modules are named ``block.<i>``
        # (no such container holds the weights), so every features_only wrapper resolves and hooks them
        self.block = nn.ModuleList([nn.Identity() for _ in embed_dims])
        self.norm: nn.Module = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.feature_info = [dict(num_chs=d, reduction=patch_size * 2 ** i, module=f"block.{i}")
                             for i, d in enumerate(embed_dims)]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_pvt_weights)

    # --- classifier -----------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(pool_tokens(x, self.global_pool, num_prefix_tokens=0))
        return x if pre_logits else self.head(x)

    # --- trunk ----------------------------------------------------------------------------------
    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Stage ``index``: NCHW (or the image) in, NCHW out."""
        checkpointing = self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled()
        x = self.pos_drops[index](self.patch_embeds[index](x))
        for j, blk in enumerate(stage):
            x = checkpoint_module(blk, x) if checkpointing else blk(x)
            if j == 0:
                x = self.pos_block[index](x)
        return self.block[index](x.permute(0, 3, 1, 2))

    @torch.jit.unused
    def _forward_trunk_checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.blocks):
            x = self._run_stage(i, stage, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return self._final(self._forward_trunk_checkpointed(x))
        for embed, drop, blocks, peg, tap in zip(self.patch_embeds, self.pos_drops, self.blocks, self.pos_block,
                                                 self.block):
            x = drop(embed(x))
            for j, blk in enumerate(blocks):
                x = blk(x)
                if j == 0:
                    x = peg(x)
            x = tap(x.permute(0, 3, 1, 2))
        return self._final(x)

    # FeatureMixin hooks: trunk module i is blocks[i], entered through patch_embeds[i]
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.patch_embeds = self.patch_embeds[:num_stages]
        self.pos_drops = self.pos_drops[:num_stages]
        self.blocks = self.blocks[:num_stages]
        self.pos_block = self.pos_block[:num_stages]
        self.block = self.block[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()


_pcpvt = Variant(Twins, depths=(3, 4, 6, 3))
_svt = Variant(Twins, depths=(2, 2, 10, 4), embed_dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16),
               mlp_ratios=(4.0, 4.0, 4.0, 4.0), wss=(7, 7, 7, 7))
VARIANTS: dict[str, Variant] = {
    "twins_pcpvt_small": _pcpvt,
    "twins_pcpvt_base": _pcpvt.but(depths=(3, 4, 18, 3)),
    "twins_pcpvt_large": _pcpvt.but(depths=(3, 8, 27, 3)),
    "twins_svt_small": _svt,
    "twins_svt_base": _svt.but(depths=(2, 2, 18, 2), embed_dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24)),
    "twins_svt_large": _svt.but(depths=(2, 2, 18, 2), embed_dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32)),
}
register_family("twins", VARIANTS)
