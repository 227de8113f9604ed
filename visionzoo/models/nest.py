"""NesT (Zhang et al., 2022, "Nested Hierarchical Transformer: Towards Accurate, Data-Efficient
and Interpretable Visual Understanding").

The token grid is cut into non-overlapping square blocks (14x14 tokens) and a plain transformer
runs *inside each block* independently (shared weights, a learned position embedding per block
and position). Between levels, *block aggregation* (3x3 conv, LayerNorm, 3x3/2 max-pool) halves
the grid so that 4 neighbouring blocks become one; the last level is a single block, i.e. global
attention. Levels hand out NCHW maps.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..layers.attention import Attention, scaled_dot_product_attention
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.linear_head import PoolLinearHeadMixin
from ..layers.mlp import Mlp
from ..layers.padding import Conv2dSame, MaxPool2dSame
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed_nhwc
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["Nest", "NestLevel", "blockify", "deblockify", "VARIANTS"]


def blockify(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, T, N, C]``: ``T`` blocks (row-major) of ``N = block_size**2`` tokens."""
    b, h, w, c = x.shape
    gh, gw = h // block_size, w // block_size
    x = x.reshape(b, gh, block_size, gw, block_size, c).transpose(2, 3)
    return x.reshape(b, gh * gw, block_size * block_size, c)


def deblockify(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Inverse of :func:`blockify` for a square grid of blocks: ``[B, T, N, C]`` -> ``[B, H, W, C]``."""
    b, t, _, c = x.shape
    g = int(math.sqrt(t) + 0.5)
    x = x.reshape(b, g, g, block_size, block_size, c).transpose(2, 3)
    return x.reshape(b, g * block_size, g * block_size, c)


class NestAttention(Attention):
    """Self-attention within each block of ``[B, T, N, C]`` tokens. The heads' outputs are merged
    head-dim-major (channel ``d * heads + h``), as the published weights expect."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, t, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, n, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5).unbind(0)
        x = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=attn_mask,
                                         dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        x = x.permute(0, 2, 3, 4, 1).reshape(b, t, n, c)  # [B, heads, T, N, d] -> [B, T, N, d * heads]
        return self.proj_drop(self.proj(x))


class TransformerLayer(nn.Module):
    """Pre-norm transformer block on blocked tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = NestAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvPool(nn.Module):
    """Block aggregation: 3x3 conv, LayerNorm over channels, 3x3 stride-2 max-pool (NCHW).
    ``same_pad``: TF "SAME" padding (the JAX-trained weights), else symmetric padding 1."""

    def __init__(self, in_chs: int, out_chs: int, same_pad: bool = False) -> None:
        super().__init__()
        self.conv = Conv2dSame(in_chs, out_chs, 3) if same_pad else nn.Conv2d(in_chs, out_chs, 3, padding=1)
        self.norm = nn.LayerNorm(out_chs, eps=1e-6)
        self.pool = MaxPool2dSame(3, 2) if same_pad else nn.MaxPool2d(3, 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.pool(x)


class NestLevel(nn.Module):
    """Optional aggregation of the previous level, then transformer layers inside each block."""

    def __init__(self, num_blocks: int, block_size: int, seq_length: int, num_heads: int, depth: int, dim: int,
                 prev_dim: Optional[int] = None, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: Sequence[float] = (),
                 same_pad: bool = False) -> None:
        super().__init__()
        self.block_size = block_size
        self.grad_checkpointing = False
        self.pos_embed = nn.Parameter(torch.zeros(1, num_blocks, seq_length, dim))
        self.pool = ConvPool(prev_dim, dim, same_pad) if prev_dim is not None else nn.Identity()
        rates = list(drop_path) or [0.0] * depth
        self.transformer_encoder = nn.Sequential(*[
            TransformerLayer(dim, num_heads, mlp_ratio, qkv_bias, proj_drop, attn_drop, rates[i])
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).permute(0, 2, 3, 1)  # NHWC
        x = blockify(x, self.block_size) + self.pos_embed
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.transformer_encoder, x)
        else:
            x = self.transformer_encoder(x)
        return deblockify(x, self.block_size).permute(0, 3, 1, 2)


class Nest(FeatureMixin, PoolLinearHeadMixin, ModelForwardMixin, nn.Module):
    """NesT image model; ``forward_features`` returns the normed NCHW map of the last level."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 img_size: int = 224, patch_size: int = 4, num_levels: int = 3,
                 embed_dims: Sequence[int] = (128, 256, 512), num_heads: Sequence[int] = (4, 8, 16),
                 depths: Sequence[int] = (2, 2, 20), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 same_pad: bool = False, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.grad_checkpointing = False
        # the last level is one block; each level before it has 4x as many
        self.num_blocks = [4 ** i for i in range(num_levels)][::-1]
        grid = img_size // patch_size
        self.block_size = int((grid ** 2 // self.num_blocks[0]) ** 0.5)
        seq_length = self.block_size ** 2
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dims[0], output_fmt="NCHW")
        rates = drop_path_rates(drop_path_rate, list(depths))
        levels, prev = [], None
        self.feature_info = []
        for i in range(num_levels):
            levels.append(NestLevel(self.num_blocks[i], self.block_size, seq_length, num_heads[i], depths[i],
                                    embed_dims[i], prev, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate,
                                    rates[i], same_pad))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=patch_size * 2 ** i, module=f"levels.{i}"))
            prev = embed_dims[i]
        self.levels = nn.Sequential(*levels)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self._init_pool_linear_head(num_classes, global_pool, drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for level in self.levels:
            trunc_normal_(level.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.levels, x)
        else:
            x = self.levels(x)
        return self._final(x)

    # --- FeatureMixin hooks: the trunk is the levels -------------------------------------------
    _stem_level = False
    _norm_is_final = True

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.patch_embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.levels)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.levels = self.levels[:num_stages]
        if prune_norm or num_stages < len(self.feature_info):
            self.norm = nn.Identity()

    def _prune_head(self) -> None:
        self.norm = nn.Identity()
        self.reset_classifier(0, "")

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample the per-block position embeddings when the block size differs."""
        out = {}
        for k, v in state_dict.items():
            if k.endswith(".pos_embed") and v.shape != model.state_dict()[k].shape:
                size = int(math.isqrt(v.shape[2]))
                new = int(math.isqrt(model.state_dict()[k].shape[2]))
                v = v.reshape(v.shape[0] * v.shape[1], size, size, v.shape[3])
                v = resample_abs_pos_embed_nhwc(v, (new, new)).reshape(1, -1, new * new, v.shape[-1])
            out[k] = v
        return out


_BASE = Variant(Nest, embed_dims=(128, 256, 512), num_heads=(4, 8, 16), depths=(2, 2, 20))
_SMALL = _BASE.but(embed_dims=(96, 192, 384), num_heads=(3, 6, 12))
_TINY = _SMALL.but(depths=(2, 2, 8))
VARIANTS: dict[str, Variant] = {
    "nest_base": _BASE,
    "nest_small": _SMALL,
    "nest_tiny": _TINY,
    "nest_base_jx": _BASE.but(same_pad=True),
    "nest_small_jx": _SMALL.but(same_pad=True),
    "nest_tiny_jx": _TINY.but(same_pad=True),
}
register_family("nest", VARIANTS)
