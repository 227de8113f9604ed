"""TNT: Transformer in Transformer.

Paper: Han, Xiao, Wu, Guo, Xu and Wang, 2021, "Transformer in Transformer",
https://arxiv.org/abs/2103.00112

Every image patch (16x16) is itself a small sequence of "pixel" (sub-patch) tokens. Each TNT block
first runs an inner transformer block over the pixel tokens of every patch independently (narrow
width, e.g. 24), then adds a linear projection of each patch's flattened pixel tokens to its patch
token, and finally runs an outer transformer block over the patch tokens (plus a class token).
Pixel tokens come from a 7x7 stride-4 conv over the image, unfolded per patch into a 4x4 grid with
its own position embedding.

``legacy=True`` is the first release: its pixel conv runs over the whole image (the newer one over
each patch on its own), and its pixel-to-patch projection normalises each pixel token (LayerNorm
over the inner width) and projects with a bias; the newer block normalises the flattened patch
(LayerNorm over ``pixels * inner width``), projects without bias and normalises the result again.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.mlp import Mlp
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.token_head import TokenLinearHeadMixin
from ..layers.weight_init import init_weights_vit_style, trunc_normal_
from .base import FeatureMixin, Variant, register_family

__all__ = ["TNT", "TNTAttention", "TNTBlock", "PixelEmbed", "VARIANTS"]


def _ln(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-5)


class TNTAttention(nn.Module):
    """Multi-head self-attention with separate ``qk`` (query and key, ``hidden_dim`` wide) and ``v``
    projections."""

    def __init__(self, dim: int, hidden_dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qk = nn.Linear(dim, hidden_dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k = self.qk(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        v = self.v(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


class TNTBlock(nn.Module):
    """Inner block over pixel tokens ``[B*N, P, Ci]``, pixel-to-patch projection, outer block over
    patch tokens ``[B, 1+N, C]``; returns both updated sequences."""

    def __init__(self, dim: int, dim_out: int, num_pixel: int, num_heads_in: int = 4, num_heads_out: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = False, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, legacy: bool = False) -> None:
        super().__init__()
        self.norm_in = _ln(dim)
        self.attn_in = TNTAttention(dim, dim, num_heads_in, qkv_bias, attn_drop, proj_drop)
        self.norm_mlp_in = _ln(dim)
        self.mlp_in = Mlp(dim, int(dim * 4), drop=proj_drop)
        self.legacy = legacy
        if legacy:
            self.norm1_proj: nn.Module = _ln(dim)
            self.proj = nn.Linear(dim * num_pixel, dim_out, bias=True)
            self.norm2_proj: nn.Module = nn.Identity()
        else:
            self.norm1_proj = _ln(dim * num_pixel)
            self.proj = nn.Linear(dim * num_pixel, dim_out, bias=False)
            self.norm2_proj = _ln(dim_out)
        self.norm_out = _ln(dim_out)
        self.attn_out = TNTAttention(dim_out, dim_out, num_heads_out, qkv_bias, attn_drop, proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm_mlp = _ln(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), drop=proj_drop)

    def forward(self, pixel: torch.Tensor, patch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixel = pixel + self.drop_path(self.attn_in(self.norm_in(pixel)))
        pixel = pixel + self.drop_path(self.mlp_in(self.norm_mlp_in(pixel)))
        b, n, _ = patch.shape
        if self.legacy:
            delta = self.proj(self.norm1_proj(pixel).reshape(b, n - 1, -1))
        else:
            delta = self.norm2_proj(self.proj(self.norm1_proj(pixel.reshape(b, n - 1, -1))))
        patch = torch.cat([patch[:, :1], patch[:, 1:] + delta], dim=1)
        patch = patch + self.drop_path(self.attn_out(self.norm_out(patch)))
        patch = patch + self.drop_path(self.mlp(self.norm_mlp(patch)))
        return pixel, patch


class PixelEmbed(nn.Module):
    """Pixel tokens ``[B*N, P, in_dim]``: a ``7x7`` stride-``stride`` conv giving each patch its
    ``(patch/stride)^2`` sub-patch tokens (position embedding added on the way).

    The conv runs on each patch cut out of the image (zero padding at every patch border); with
    ``legacy`` (the first release) it runs over the whole image and its output is cut into patches.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, in_dim: int = 48,
                 stride: int = 4, legacy: bool = False) -> None:
        super().__init__()
        self.legacy = legacy
        self.img_size, self.patch_size = to_2tuple(img_size), to_2tuple(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_dim = in_dim
        self.new_patch_size = [math.ceil(p / stride) for p in self.patch_size]
        self.proj = nn.Conv2d(in_chans, in_dim, kernel_size=7, padding=3, stride=stride)

    def forward(self, x: torch.Tensor, pixel_pos: torch.Tensor) -> torch.Tensor:
        ph, pw = self.new_patch_size
        if self.legacy:
            x = F.unfold(self.proj(x), kernel_size=(ph, pw), stride=(ph, pw))   # [B, Ci*ph*pw, N]
            x = x.transpose(1, 2).reshape(-1, self.in_dim, ph, pw)
        else:
            c = x.shape[1]
            x = F.unfold(x, kernel_size=self.patch_size, stride=self.patch_size)  # [B, C*16*16, N]
            x = self.proj(x.transpose(1, 2).reshape(-1, c, self.patch_size[0], self.patch_size[1]))
        x = x + pixel_pos
        return x.reshape(x.shape[0], self.in_dim, -1).transpose(1, 2)        # [B*N, P, Ci]


class TNT(FeatureMixin, TokenLinearHeadMixin, nn.Module):
    """TNT: pixel embedding -> patch embedding (projected flattened pixel tokens) + class token and
    position embedding -> ``depth`` TNT blocks -> norm -> head on the class token."""
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "token", embed_dim: int = 768, inner_dim: int = 48, depth: int = 12,
                 num_heads_inner: int = 4, num_heads_outer: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False, drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 first_stride: int = 4, legacy: bool = False) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        pixel_embed = PixelEmbed(img_size, patch_size, in_chans, inner_dim, first_stride, legacy)
        ph, pw = pixel_embed.new_patch_size
        num_pixel = ph * pw
        # the embeddings are registered first: the published state_dict order
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_pos = nn.Parameter(torch.zeros(1, pixel_embed.num_patches + 1, embed_dim))
        self.pixel_pos = nn.Parameter(torch.zeros(1, inner_dim, ph, pw))
        self.pixel_embed = pixel_embed
        self.norm1_proj = _ln(num_pixel * inner_dim)
        self.proj = nn.Linear(num_pixel * inner_dim, embed_dim)
        self.norm2_proj = _ln(embed_dim)
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            TNTBlock(inner_dim, embed_dim, num_pixel, num_heads_inner, num_heads_outer, mlp_ratio, qkv_bias,
                     proj_drop_rate, attn_drop_rate, dpr[i], legacy)
            for i in range(depth)])
        r = self.pixel_embed.patch_size[0]
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=r) for i in range(depth)]
        self.default_out_indices = tuple(range(max(depth - 3, 0), depth))
        self.norm = _ln(embed_dim)
        self._init_token_head(num_classes, global_pool, drop_rate)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        self.apply(init_weights_vit_style)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.patch_pos, std=0.02)
        trunc_normal_(self.pixel_pos, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"patch_pos", "pixel_pos", "cls_token"}

    # ---- forward ----------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel tokens ``[B*N, P, Ci]``, patch tokens ``[B, 1+N, C]``)."""
        b = x.shape[0]
        pixel = self.pixel_embed(x, self.pixel_pos)
        patch = self.norm2_proj(self.proj(self.norm1_proj(pixel.reshape(b, -1, pixel.shape[1] * pixel.shape[2]))))
        patch = torch.cat([self.cls_token.expand(b, -1, -1), patch], dim=1)
        return pixel, self.pos_drop(patch + self.patch_pos)

    def _run_stage(self, index: int, stage: nn.Module,
                   x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x[0], x[1])
        return stage(x[0], x[1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pixel, patch = self._embed(x)
        for i, blk in enumerate(self.blocks):
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                pixel, patch = checkpoint_module(blk, pixel, patch)
            else:
                pixel, patch = blk(pixel, patch)
        return self.norm(patch)

    # ---- FeatureMixin hooks: one level per TNT block (patch tokens, class token dropped) ------
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")
    _final_after_stop_early = True

    def _forward_stem(self, x: torch.Tensor):
        return self._embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _final(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.norm(x[1])

    def _level_output(self, x: tuple[torch.Tensor, torch.Tensor], is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        patch = x[1]
        if norm:
            patch = self.norm(patch)
        patch = patch[:, self.num_prefix_tokens:]
        if output_fmt == "NLC":
            return patch
        gh, gw = in_size[0] // self.pixel_embed.patch_size[0], in_size[1] // self.pixel_embed.patch_size[1]
        return patch.reshape(patch.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    # ---- checkpoint adaptation ------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample the patch position embedding to the model's grid."""
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k == "patch_pos" and v.shape != model.patch_pos.shape:
                v = resample_abs_pos_embed(v, model.pixel_embed.grid_size)
            out[k] = v
        return out


_s = Variant(TNT, patch_size=16, embed_dim=384, inner_dim=24, depth=12, num_heads_inner=4, num_heads_outer=6)
VARIANTS: dict[str, Variant] = {
    "tnt_s_legacy_patch16_224": _s.but(legacy=True),
    "tnt_s_patch16_224": _s,
    "tnt_b_patch16_224": _s.but(embed_dim=640, inner_dim=40, num_heads_outer=10),
}
register_family("tnt", VARIANTS)
