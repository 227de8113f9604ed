"""Qwen3-VL vision encoder as an image backbone.

Paper / model card:
    * Qwen3-VL: Qwen Team, 2025, "Qwen3-VL Technical Report", https://arxiv.org/abs/2511.21631
    * Qwen2-VL (2-D RoPE, token merger): Wang et al., 2024, https://arxiv.org/abs/2409.12191

A plain pre-norm ViT (16 px patches, no class token, no final norm) whose attention rotates
queries and keys by 2-D axial RoPE (half layout: ``head_dim / 4`` bands for rows then columns),
plus a learned 48x48 absolute position table resampled bilinearly (corner-aligned) to the input's
grid. The "merger" concatenates each 2x2 patch neighbourhood (after a LayerNorm) and maps it with
a two-layer MLP to the language model's width: the tokens the VLM reads.

Three views of one checkpoint per size:

* ``qwen3_vit_<size>_enc``: the encoder itself; ``forward`` returns merged tokens ``[B, N/4, D]``;
* ``qwen3_vit_<size>``: the encoder without merger under ``encoder.``, average-pooled;
* ``qwen3_vit_<size>_merge``: the encoder with merger under ``encoder.``, merged tokens pooled.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.patch_embed import PatchEmbed
from ..layers.rope import AxialRope
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family
from .eva import EvaBlock

__all__ = ["Qwen3VisionEncoder", "Qwen3Vit", "PatchMerger", "VARIANTS"]


def pool_tokens(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """``[B, N, C]`` -> ``[B, C]`` by ``'avg'``, ``'max'`` or ``'avgmax'`` (``''``: unchanged)."""
    if pool_type == "avg":
        return x.mean(1)
    if pool_type == "max":
        return x.amax(1)
    if pool_type == "avgmax":
        return 0.5 * (x.mean(1) + x.amax(1))
    return x


class _PooledHead(nn.Module):
    """Pool, standardise (LayerNorm without affine: the pooled embedding has no learned norm),
    dropout; the classifier itself stays the owner's ``head`` attribute (its checkpoint name)."""

    def __init__(self, dim: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor, pool_type: str) -> torch.Tensor:
        if pool_type:
            x = self.norm(pool_tokens(x, pool_type))
        return self.drop(x)


class PatchMerger(nn.Module):
    """LayerNorm each token, concatenate 2x2 neighbourhoods (row-major inside the window), MLP."""

    def __init__(self, dim: int, out_dim: int, merge: int = 2, eps: float = 1e-6) -> None:
        super().__init__()
        self.merge = merge
        hidden = dim * merge * merge
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(hidden, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """``[B, H*W, C]`` tokens on a ``grid`` -> ``[B, H*W/m^2, out_dim]`` (windows row-major)."""
        b, _, c = x.shape
        m, (h, w) = self.merge, grid
        x = self.norm(x).reshape(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, (h // m) * (w // m), m * m * c)
        return self.fc2(self.act(self.fc1(x)))


class Qwen3VisionEncoder(FeatureMixin, nn.Module):
    """The Qwen3-VL vision tower (see the module docstring); ``forward`` returns merged tokens, or
    patch tokens when built with ``merger=False`` (the VLM's input). ``forward_head`` pools them
    (``global_pool``, ``'avg'`` by default) for classification-style use."""
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(self, *, img_size: int | Sequence[int] = 768, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 0, global_pool: str = "avg", embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_hidden: int = 3072, out_dim: int = 1024, merger: bool = True,
                 pos_grid: int = 48, rope_temperature: float = 10000.0, act_layer: LayerType = "gelu_tanh",
                 norm_eps: float = 1e-6, drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.global_pool = num_classes, global_pool or "avg"
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False
        self.img_size = to_2tuple(img_size)
        self.pos_grid = (pos_grid, pos_grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid, embed_dim))
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, output_fmt="NHWC", strict_img_size=False)
        head_dim = embed_dim // num_heads
        self.rope = AxialRope(head_dim, grid=self.patch_embed.grid_size, temperature=rope_temperature, half=True)
        norm = partial(nn.LayerNorm, eps=norm_eps)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            EvaBlock(embed_dim, num_heads, mlp_hidden, act_layer=act_layer, drop_path=dpr[i],
                     proj_drop=proj_drop_rate, norm_layer=norm, qkv_mode="fused_bias", qkv_bias=True,
                     num_prefix_tokens=0, rope_half=True, attn_drop=attn_drop_rate)
            for i in range(depth)])
        self.merger = PatchMerger(embed_dim, out_dim, eps=norm_eps) if merger else None
        self.out_dim = out_dim if merger else embed_dim  # width of forward()'s tokens
        self.num_features = embed_dim
        self.head_hidden_size = self.out_dim
        self.pool_head = _PooledHead(self.out_dim, drop_rate)
        self.head = nn.Linear(self.out_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}")
                             for i in range(depth)]
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        trunc_normal_(self.pos_embed, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        self.rope.init_non_persistent_buffers()

    def no_weight_decay(self) -> set:
        return {"pos_embed"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool:
            self.global_pool = global_pool
        self.head = nn.Linear(self.out_dim, num_classes) if num_classes > 0 else nn.Identity()

    def set_input_size(self, img_size: int | Sequence[int] | None = None) -> None:
        """New nominal input size: the RoPE table is rebuilt (any multiple of the patch runs anyway)."""
        if img_size is None:
            return
        self.img_size = to_2tuple(img_size)
        pe = self.patch_embed
        pe.img_size = self.img_size
        pe.grid_size = (self.img_size[0] // pe.patch_size[0], self.img_size[1] // pe.patch_size[1])
        pe.num_patches = pe.grid_size[0] * pe.grid_size[1]
        self.rope.set_grid(pe.grid_size)

    # ---- forward ------------------------------------------------------------------------
    def _pos(self, grid: Tuple[int, int]) -> torch.Tensor:
        """The 48x48 table, corner-aligned bilinear to ``grid``: ``[1, H*W, C]``."""
        if grid == self.pos_grid:
            return self.pos_embed
        table = self.pos_embed.reshape(1, self.pos_grid[0], self.pos_grid[1], -1).permute(0, 3, 1, 2)
        table = F.interpolate(table.float(), size=grid, mode="bilinear", align_corners=True).to(self.pos_embed.dtype)
        return table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
        x = self.patch_embed(x)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c) + self._pos((h, w))
        return x, self.rope.get_embed([h, w]), (h, w)

    def _run_block(self, blk: nn.Module, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_module(blk, x, rope)
        return blk(x, rope=rope)

    def forward_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch tokens after the last block and their grid."""
        x, rope, grid = self._embed(x)
        for blk in self.blocks:
            x = self._run_block(blk, x, rope)
        return x, grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self.forward_tokens(x)
        return self.merger(x, grid) if self.merger is not None else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool_head(x, self.global_pool)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Merged (or patch) tokens ``[B, N, D]``; with a classifier (``num_classes > 0``) its logits."""
        x = self.forward_features(x)
        return self.forward_head(x) if self.num_classes > 0 else x

    # ---- features (the trunk is the blocks; the RoPE table is kept for the run) ---------------
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")

    def _forward_stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        x, rope, grid = self._embed(x)
        self._run_rope: Optional[torch.Tensor] = rope
        self._run_grid = grid
        return x, None

    def _feature_stages(self) -> List[nn.Module]:
        return list(self.blocks)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self._run_block(stage, x, self._run_rope)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        out = self.merger(x, self._run_grid) if self.merger is not None else x
        self._run_rope = None
        return out

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: Tuple[int, int]) -> torch.Tensor:
        if output_fmt == "NLC":
            return x
        h, w = self._run_grid
        return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]

    def _prune_head(self) -> None:
        self.merger = None
        self.out_dim = self.head_hidden_size = self.embed_dim
        self.pool_head = _PooledHead(self.out_dim)
        self.reset_classifier(0)


class PooledEncoderModel(FeatureMixin, nn.Module):
    """Base of the models that keep a vision encoder under ``encoder.`` and put a pooled head on it.

    Subclasses build ``self.encoder``, ``self.pool_head`` and the widths, then call
    :meth:`_finish_head`; forward, classifier and the feature hooks delegate to the encoder.
    """
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")

    def _finish_head(self, num_classes: int, global_pool: str) -> None:
        """Set the classifier; the first call (from ``__init__``) also starts without checkpointing."""
        if "grad_checkpointing" not in self.__dict__:
            self.grad_checkpointing = False
        self.num_classes, self.global_pool = num_classes, global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def init_non_persistent_buffers(self) -> None:
        self.encoder.init_non_persistent_buffers()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self._finish_head(num_classes, self.global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool_head(x, self.global_pool)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.encoder.set_grad_checkpointing(enable)

    # ---- features: delegated to the encoder's hooks ----------------------------------------
    def _forward_stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.encoder._forward_stem(x)

    def _feature_stages(self) -> List[nn.Module]:
        return self.encoder._feature_stages()

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.encoder._run_stage(index, stage, x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder._final(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: Tuple[int, int]) -> torch.Tensor:
        return self.encoder._level_output(x, is_last, norm, output_fmt, in_size)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.encoder._prune_to(num_stages, prune_norm)


class Qwen3Vit(PooledEncoderModel):
    """The encoder under ``encoder.`` with a pooled head: average over patch tokens (``merger=False``)
    or over merged tokens, standardised (LayerNorm without affine), then an optional classifier."""

    def __init__(self, *, num_classes: int = 0, global_pool: str = "avg", drop_rate: float = 0.0,
                 **encoder_args) -> None:
        super().__init__()
        if global_pool not in ("avg", "max", "avgmax", ""):
            raise ValueError(f"global_pool must be 'avg', 'max', 'avgmax' or '', got {global_pool!r}")
        self.encoder = Qwen3VisionEncoder(**encoder_args)
        self.num_features = self.head_hidden_size = self.encoder.out_dim
        self.feature_info = [dict(f, module=f"encoder.{f['module']}") for f in self.encoder.feature_info]
        self.pool_head = _PooledHead(self.num_features, drop_rate)
        self._finish_head(num_classes, global_pool)

    def set_input_size(self, img_size: int | Sequence[int] | None = None) -> None:
        self.encoder.set_input_size(img_size)

    def _prune_head(self) -> None:
        self.encoder._prune_head()
        self.num_features = self.head_hidden_size = self.encoder.out_dim
        self.pool_head = _PooledHead(self.num_features)
        self.reset_classifier(0, "")


def _sizes(dim: int, depth: int, heads: int, mlp_hidden: int, out_dim: int) -> Dict[str, Variant]:
    enc = dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_hidden=mlp_hidden, out_dim=out_dim)
    return {
        "": Variant(Qwen3Vit, merger=False, **enc),
        "_enc": Variant(Qwen3VisionEncoder, **enc),
        "_merge": Variant(Qwen3Vit, **enc),
    }


VARIANTS: Dict[str, Variant] = {
    f"qwen3_vit_{size}{suffix}": v
    for size, args in (("88m", (768, 12, 12, 3072, 1024)), ("306m", (1024, 24, 16, 4096, 2048)),
                       ("416m", (1152, 27, 16, 4304, 5120)))
    for suffix, v in _sizes(*args).items()
}
register_family("qwen3_vit", VARIANTS)
