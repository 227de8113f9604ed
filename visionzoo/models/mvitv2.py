"""MViTv2 (Li et al., 2022, "MViTv2: Improved Multiscale Vision Transformers for Classification
and Detection").

A multiscale transformer: resolution drops and width grows stage by stage, and every block's
*pooling attention* shrinks its keys/values (and, at a stage's first block, its queries) with
strided depthwise convolutions followed by a LayerNorm, applied per head. Position enters as a
*decomposed* relative embedding (one table per axis, ``q . R_h[dy] + q . R_w[dx]``, offsets of
differently sized query and key grids compared on a common scale), and the pooled query is added
back to the attention output (*residual pooling*). The shortcut of a downsampling block is
max-pooled; the width change happens in the attention (``expand_attn``) or in the MLP of the
previous stage's last block. ``*_cls`` variants carry a class token that the pooling skips.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention import scaled_dot_product_attention
from ..layers.config import use_fused_attn
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.mlp import Mlp
from ..layers.pool import pool_tokens
from ..layers.rel_pos_bias import decomposed_rel_pos
from ..layers.weight_init import trunc_normal_
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["MultiScaleVit", "MultiScaleAttention", "MultiScaleBlock", "pooled_size", "split_grid", "merge_grid",
           "VARIANTS"]

_Size = Tuple[int, int]


def pooled_size(size: Sequence[int], kernel: int, stride: int) -> _Size:
    """Grid after a ``kernel`` / ``stride`` pool padded by ``kernel // 2`` (conv arithmetic)."""
    pad = kernel // 2
    return (int(size[0]) + 2 * pad - kernel) // stride + 1, (int(size[1]) + 2 * pad - kernel) // stride + 1


def split_grid(x: torch.Tensor, size: _Size, num_prefix: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[..., num_prefix + H*W, C]`` -> (prefix tokens, ``[prod(...), C, H, W]`` map of the grid tokens)."""
    grid = x[..., num_prefix:, :]
    grid = grid.reshape(-1, size[0], size[1], x.shape[-1]).permute(0, 3, 1, 2)
    return x[..., :num_prefix, :], grid


def merge_grid(prefix: torch.Tensor, grid: torch.Tensor) -> Tuple[torch.Tensor, _Size]:
    """Inverse of :func:`split_grid` for a (pooled) map: tokens and the map's grid size."""
    new_size = (grid.shape[-2], grid.shape[-1])
    lead = list(prefix.shape[:-2])
    grid = grid.flatten(2).transpose(1, 2).reshape(lead + [new_size[0] * new_size[1], grid.shape[1]])
    return torch.cat([prefix, grid], dim=-2), new_size


class MultiScaleAttention(nn.Module):
    """Pooling attention: per-head depthwise conv pooling + LayerNorm of q, k and v, decomposed
    relative position bias and residual pooling (``x += q``)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, feat_size: _Size, kernel_q: int = 3,
                 kernel_kv: int = 3, stride_q: int = 1, stride_kv: int = 1, has_cls_token: bool = False,
                 residual_pooling: bool = True, norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim_out = dim_out
        self.head_dim = dim_out // num_heads
        self.scale = self.head_dim ** -0.5
        self.num_prefix = 1 if has_cls_token else 0
        self.residual_pooling = residual_pooling
        self.fused_attn = use_fused_attn()
        q_size = pooled_size(feat_size, kernel_q, stride_q)
        kv_size = pooled_size(feat_size, kernel_kv, stride_kv)
        # registration order is the checkpoint's: rel_pos_h/w, qkv, proj, pool_q/norm_q, pool_k, pool_v
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * max(q_size[0], kv_size[0]) - 1, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * max(q_size[1], kv_size[1]) - 1, self.head_dim))
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)
        hd = self.head_dim
        self.pool_q = nn.Conv2d(hd, hd, kernel_q, stride_q, kernel_q // 2, groups=hd, bias=False)
        self.norm_q = norm_layer(hd)
        self.pool_k = nn.Conv2d(hd, hd, kernel_kv, stride_kv, kernel_kv // 2, groups=hd, bias=False)
        self.norm_k = norm_layer(hd)
        self.pool_v = nn.Conv2d(hd, hd, kernel_kv, stride_kv, kernel_kv // 2, groups=hd, bias=False)
        self.norm_v = norm_layer(hd)
        trunc_normal_(self.rel_pos_h, std=0.02)
        trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor, feat_size: _Size) -> tuple[torch.Tensor, _Size]:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        p = self.num_prefix
        prefix, grid = split_grid(q, feat_size, p)
        q, q_size = merge_grid(prefix, self.pool_q(grid))
        prefix, grid = split_grid(k, feat_size, p)
        k, k_size = merge_grid(prefix, self.pool_k(grid))
        prefix, grid = split_grid(v, feat_size, p)
        v, _ = merge_grid(prefix, self.pool_v(grid))
        q, k, v = self.norm_q(q), self.norm_k(k), self.norm_v(v)

        nq, nk = q.shape[2], k.shape[2]
        rel = decomposed_rel_pos(q[:, :, p:].reshape(b * self.num_heads, nq - p, self.head_dim),
                                 self.rel_pos_h, self.rel_pos_w, q_size, k_size)
        bias = F.pad(rel.reshape(b, self.num_heads, nq - p, nk - p), (p, 0, p, 0))  # no bias on the class token
        out = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=bias, scale=self.scale)
        if self.residual_pooling:  # the class token's pooled query is added too
            out = out + q
        out = out.transpose(1, 2).reshape(b, nq, self.dim_out)
        return self.proj(out), q_size


class MultiScaleBlock(nn.Module):
    """Pre-norm block around :class:`MultiScaleAttention`; the shortcut is projected (width change
    in the attention: normed input; in the MLP: normed mid-block tokens) and max-pooled with the
    query stride."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, feat_size: _Size, mlp_ratio: float = 4.0,
                 stride_q: int = 1, stride_kv: int = 1, kernel: int = 3, expand_attn: bool = True,
                 has_cls_token: bool = False, residual_pooling: bool = True, drop_path: float = 0.0,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        proj_needed = dim != dim_out
        attn_dim = dim_out if expand_attn else dim
        self.num_prefix = 1 if has_cls_token else 0
        self.norm1 = norm_layer(dim)
        self.shortcut_proj_attn = nn.Linear(dim, attn_dim) if proj_needed and expand_attn else None
        self.shortcut_pool = (nn.MaxPool2d(stride_q + 1, stride_q, (stride_q + 1) // 2) if stride_q > 1 else None)
        self.attn = MultiScaleAttention(dim, attn_dim, num_heads, feat_size, kernel, kernel, stride_q, stride_kv,
                                        has_cls_token, residual_pooling, norm_layer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(attn_dim)
        self.shortcut_proj_mlp = nn.Linear(dim, dim_out) if proj_needed and not expand_attn else None
        self.mlp = Mlp(attn_dim, int(attn_dim * mlp_ratio), dim_out)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, feat_size: _Size) -> tuple[torch.Tensor, _Size]:
        x_norm = self.norm1(x)
        if self.shortcut_proj_attn is not None:
            x = self.shortcut_proj_attn(x_norm)
        if self.shortcut_pool is not None:
            prefix, grid = split_grid(x, feat_size, self.num_prefix)
            x, _ = merge_grid(prefix, self.shortcut_pool(grid))
        attn, feat_size = self.attn(x_norm, feat_size)
        x = x + self.drop_path1(attn)
        x_norm = self.norm2(x)
        if self.shortcut_proj_mlp is not None:
            x = self.shortcut_proj_mlp(x_norm)
        return x + self.drop_path2(self.mlp(x_norm)), feat_size


class MultiScaleVitStage(nn.Module):
    """The blocks of one resolution (the first pools its queries)."""

    def __init__(self, blocks: list[MultiScaleBlock]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, feat_size: _Size) -> tuple[torch.Tensor, _Size]:
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
                x, feat_size = checkpoint_module(blk, x, feat_size)
            else:
                x, feat_size = blk(x, feat_size)
        return x, feat_size


def tokens_to_map(x: torch.Tensor, feat_size: _Size, num_prefix: int) -> torch.Tensor:
    """``[B, num_prefix + H*W, C]`` tokens -> ``[B, C, H, W]`` (a permuted view)."""
    return x[:, num_prefix:].reshape(x.shape[0], feat_size[0], feat_size[1], -1).permute(0, 3, 1, 2)


class _GridTap(nn.Module):
    """Parameterless view of a stage's tokens as an NCHW map (class token dropped).

    The reference names the feature levels ``block.<i>``; these taps are those modules, so that
    every ``features_only`` wrapper (hooks included) finds a module per level."""

    def __init__(self, num_prefix: int) -> None:
        super().__init__()
        self.num_prefix = num_prefix

    def forward(self, x: torch.Tensor, feat_size: _Size) -> torch.Tensor:
        return tokens_to_map(x, feat_size, self.num_prefix)


class _TokenHead(nn.Module):
    """Class token or mean of the grid tokens -> dropout -> fc (``''``: tokens unchanged)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str, num_prefix: int,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.pool_type, self.num_prefix = in_features, pool_type, num_prefix
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        if pool_type is not None:
            self.pool_type = pool_type
        self.fc = nn.Linear(self.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(pool_tokens(x, self.pool_type, self.num_prefix))
        return x if pre_logits else self.fc(x)


class MultiScaleVit(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """MViTv2 image model; ``forward_features`` returns normed tokens ``[B, (1 +) H*W, C]``."""

    feature_cfg = {"feature_cls": "getter"}

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: Optional[str] = None,
                 img_size: int | Sequence[int] = 224, depths: Sequence[int] = (2, 3, 16, 3), embed_dim: int = 96,
                 num_heads: int = 1, mlp_ratio: float = 4.0, expand_attn: bool = True, use_cls_token: bool = False,
                 residual_pooling: bool = True, pool_kernel: int = 3, stride_q: int = 2, stride_kv: int = 4,
                 patch_kernel: int = 7, patch_stride: int = 4, norm_eps: float = 1e-6, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.num_prefix_tokens = 1 if use_cls_token else 0
        global_pool = global_pool if global_pool is not None else ("token" if use_cls_token else "avg")
        img = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        norm_layer = lambda d: nn.LayerNorm(d, eps=norm_eps)  # noqa: E731

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if use_cls_token else None
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_chans, embed_dim, patch_kernel, patch_stride, patch_kernel // 2)
        feat_size = pooled_size(img, patch_kernel, patch_stride)

        rates = drop_path_rates(drop_path_rate, list(depths))
        num_stages = len(depths)
        dim, kv_stride, reduction = embed_dim, stride_kv, patch_stride
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            stage_dim, stage_heads = embed_dim * 2 ** i, num_heads * 2 ** i
            if i > 0:
                kv_stride = max(kv_stride // stride_q, 1)
            blocks = []
            for j in range(depth):
                q_stride = stride_q if i > 0 and j == 0 else 1
                if expand_attn:
                    out = stage_dim
                else:  # the width grows in the MLP of each stage's last block
                    out = embed_dim * 2 ** (i + 1) if j == depth - 1 and i < num_stages - 1 else stage_dim
                blocks.append(MultiScaleBlock(dim, out, stage_heads, feat_size, mlp_ratio, q_stride, kv_stride,
                                              pool_kernel, expand_attn, use_cls_token, residual_pooling,
                                              rates[i][j], norm_layer))
                feat_size = pooled_size(feat_size, pool_kernel, q_stride)
                dim = out
            if i > 0:
                reduction *= stride_q
            stages.append(MultiScaleVitStage(blocks))
            self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"block.{i}"))
        self.stages = nn.ModuleList(stages)
        self.block = nn.ModuleList([_GridTap(self.num_prefix_tokens) for _ in stages])
        self.num_features = self.head_hidden_size = dim
        self.norm = norm_layer(dim)
        self.head = _TokenHead(dim, num_classes, global_pool, self.num_prefix_tokens, drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, _Size]:
        x = self.patch_embed.proj(x)
        feat_size = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls_token = self.cls_token
        if cls_token is not None:
            x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x, feat_size

    def _forward_stem(self, x: torch.Tensor) -> Any:
        return self._embed(x), None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, feat_size = self._embed(x)
        for stage in self.stages:
            x, feat_size = stage(x, feat_size)
        return self.norm(x)

    # --- FeatureMixin hooks: the trunk carries (tokens, grid size); levels are the stage ends ----
    _stem_level = False
    _output_fmts = ("NCHW", "NHWC")

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.stages)

    def _run_stage(self, index: int, stage: nn.Module, x: Any) -> Any:
        x = stage(*x)
        self.block[index](*x)  # a view; runs so that forward hooks on ``block.<i>`` see the level
        return x

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        self.block = self.block[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    def _final(self, x: Any) -> torch.Tensor:
        return self.norm(x[0])

    def _prune_head(self) -> None:
        self.norm = nn.Identity()
        self.reset_classifier(0, "")

    def _level_output(self, x: Any, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        tokens, feat_size = x
        if norm and is_last:
            tokens = self.norm(tokens)
        grid = tokens_to_map(tokens, feat_size, self.num_prefix_tokens)
        return grid.contiguous() if output_fmt == "NCHW" else grid.permute(0, 2, 3, 1)

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Unwrap the original releases' ``model_state`` dict; their head is ``head.projection``."""
        state_dict = state_dict.get("model_state", state_dict)
        return {k.replace("head.projection.", "head.fc."): v for k, v in state_dict.items()}


_BASE = Variant(MultiScaleVit, depths=(2, 3, 16, 3), embed_dim=96, num_heads=1)
VARIANTS: dict[str, Variant] = {
    "mvitv2_tiny": _BASE.but(depths=(1, 2, 5, 2)),
    "mvitv2_small": _BASE.but(depths=(1, 2, 11, 2)),
    "mvitv2_base": _BASE,
    "mvitv2_large": _BASE.but(depths=(2, 6, 36, 4), embed_dim=144, num_heads=2, expand_attn=False),
    "mvitv2_small_cls": _BASE.but(depths=(1, 2, 11, 2), use_cls_token=True),
    "mvitv2_base_cls": _BASE.but(use_cls_token=True),
    "mvitv2_large_cls": _BASE.but(depths=(2, 6, 36, 4), embed_dim=144, num_heads=2, use_cls_token=True),
    "mvitv2_huge_cls": _BASE.but(depths=(4, 8, 60, 8), embed_dim=192, num_heads=3, use_cls_token=True),
}
register_family("mvitv2", VARIANTS)
