"""SAM image encoder: a plain ViT with windowed attention and decomposed relative position.

Papers:
    * Segment Anything: Kirillov et al., 2023, https://arxiv.org/abs/2304.02643
    * ViTDet (windowed blocks with a few global ones): Li et al., 2022, https://arxiv.org/abs/2203.16527
    * Decomposed relative position (MViTv2): Li et al., 2022, https://arxiv.org/abs/2112.01526

Tokens stay an ``[B, H, W, C]`` map. Most blocks attend inside non-overlapping ``window_size``
windows (the map zero-padded to a multiple of the window); the blocks in ``global_attn_indexes``
attend over the whole map. Every attention adds ``q . R_h[dy] + q . R_w[dx]`` from per-axis
tables (``rel_pos_h/w``). A learned ``[1, H, W, C]`` position embedding is added after the patch
embedding. The segmentation neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d to 256 channels)
or a plain LayerNorm2d is followed by a pooled classifier head.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention import Attention, scaled_dot_product_attention
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.helpers import to_2tuple
from ..layers.norm import LayerNorm2d
from ..layers.patch_embed import PatchEmbed
from ..layers.pool import ClassifierHead
from ..layers.pos_embed import resample_abs_pos_embed_nhwc
from ..layers.rel_pos_bias import decomposed_rel_pos, resize_rel_pos
from ..layers.weight_init import trunc_normal_
from ..layers.window_attention import window_partition, window_reverse
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family
from .vision_transformer import Block

__all__ = ["VisionTransformerSAM", "SamAttention", "SamBlock", "VARIANTS"]


class SamAttention(Attention):
    """:class:`~visionzoo.layers.attention.Attention` over an ``[B, H, W, C]`` map with the
    decomposed relative position bias of a ``input_size`` grid (``rel_pos_h``/``rel_pos_w``,
    ``[2 * size - 1, head_dim]``); other grids read a linearly resampled table."""

    def __init__(self, dim: int, num_heads: int = 8, input_size: Sequence[int] = (14, 14), use_rel_pos: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * int(input_size[0]) - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * int(input_size[1]) - 1, self.head_dim))
            trunc_normal_(self.rel_pos_h, std=0.02)
            trunc_normal_(self.rel_pos_w, std=0.02)
        else:
            self.rel_pos_h = self.rel_pos_w = None

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, h, w, c = x.shape
        n = h * w
        q, k, v = self.qkv(x.reshape(b, n, c)).reshape(b, n, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        bias = attn_mask
        if self.rel_pos_h is not None and self.rel_pos_w is not None:
            rel = decomposed_rel_pos(q.reshape(b * self.num_heads, n, self.head_dim), self.rel_pos_h,
                                     self.rel_pos_w, (h, w), (h, w)).reshape(b, self.num_heads, n, n)
            bias = rel if bias is None else rel + bias
        x = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=bias,
                                         dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        x = self.proj_drop(self.proj(self.norm(x.transpose(1, 2).reshape(b, n, c))))
        return x.reshape(b, h, w, c)


class SamBlock(Block):
    """ViT pre-norm block on an ``[B, H, W, C]`` map; ``window_size > 0`` attends inside
    (zero-padded) windows, ``0`` over the whole map."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 0, input_size: Sequence[int] = (64, 64),
                 use_rel_pos: bool = True, qkv_bias: bool = True, qk_norm: bool = False, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, norm_layer: Any = nn.LayerNorm,
                 **kwargs: Any) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias,
                         attn_drop=attn_drop, proj_drop=proj_drop, norm_layer=norm_layer, **kwargs)
        self.window_size = window_size
        size = (window_size, window_size) if window_size > 0 else tuple(input_size)
        self.attn = SamAttention(dim, num_heads, input_size=size, use_rel_pos=use_rel_pos, qkv_bias=qkv_bias,
                                 qk_norm=qk_norm, proj_bias=proj_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                                 norm_layer=norm_layer)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        if self.window_size <= 0:
            return self.attn(x)
        b, h, w, c = x.shape
        ws = self.window_size
        pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        x = self.attn(window_partition(x, (ws, ws)))
        return window_reverse(x, (ws, ws), hp, wp)[:, :h, :w, :].contiguous()

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self._attend(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformerSAM(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """SAM's ViT image encoder (ViTDet layout) plus a pooled classifier head.

    Args:
        window_size: attention window of the local blocks; ``global_attn_indexes``: blocks that
            attend over the whole map.
        use_abs_pos: learned ``[1, H, W, C]`` position embedding; ``use_rel_pos``: decomposed bias.
        neck_chans: width of the conv neck (``None``: a LayerNorm2d neck at ``embed_dim``).
        dynamic_img_size: accept other input sizes (position embedding and global tables resampled).
    """

    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(self, *, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3, num_classes: int = 0,
                 global_pool: str = "avg", embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, window_size: int = 14,
                 global_attn_indexes: Sequence[int] = (), use_abs_pos: bool = True, use_rel_pos: bool = True,
                 neck_chans: Optional[int] = 256, dynamic_img_size: bool = False, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        norm = lambda d: nn.LayerNorm(d, eps=1e-6)  # noqa: E731
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.dynamic_img_size = dynamic_img_size
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, output_fmt="NHWC", strict_img_size=not dynamic_img_size)
        grid = self.patch_embed.grid_size
        if use_abs_pos:
            self.pos_embed: Optional[nn.Parameter] = nn.Parameter(torch.zeros(1, grid[0], grid[1], embed_dim))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            SamBlock(embed_dim, num_heads, window_size=0 if i in global_attn_indexes else window_size,
                     input_size=grid, use_rel_pos=use_rel_pos, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                     attn_drop=attn_drop_rate, proj_drop=proj_drop_rate, drop_path=dpr[i], norm_layer=norm)
            for i in range(depth)])
        reduction = self.patch_embed.patch_size[0]
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f"blocks.{i}") for i in range(depth)]
        if neck_chans:
            self.neck: nn.Module = nn.Sequential(
                nn.Conv2d(embed_dim, neck_chans, 1, bias=False), LayerNorm2d(neck_chans),
                nn.Conv2d(neck_chans, neck_chans, 3, padding=1, bias=False), LayerNorm2d(neck_chans))
        else:
            self.neck = LayerNorm2d(embed_dim)
            neck_chans = embed_dim
        self.num_features = self.head_hidden_size = neck_chans
        self.head = ClassifierHead(neck_chans, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def set_input_size(self, img_size: Optional[int | Sequence[int]] = None) -> None:
        """Run at another input size: the position embedding is resampled to the new grid (global
        blocks resample their per-axis tables on the fly; windowed blocks are unchanged)."""
        pe = self.patch_embed
        if img_size is not None:
            pe.img_size = to_2tuple(img_size)
            pe.grid_size = (pe.img_size[0] // pe.patch_size[0], pe.img_size[1] // pe.patch_size[1])
            pe.num_patches = pe.grid_size[0] * pe.grid_size[1]
        if self.pos_embed is not None:
            self.pos_embed = nn.Parameter(resample_abs_pos_embed_nhwc(self.pos_embed.detach(), pe.grid_size))

    # ---- forward ---------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            pos = self.pos_embed
            if self.dynamic_img_size:
                pos = resample_abs_pos_embed_nhwc(pos, (x.shape[1], x.shape[2]))
            x = x + pos
        return self.pos_drop(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        # written out rather than through ``_run_stage``: TorchScript has no module-typed parameters
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.neck(x.permute(0, 3, 1, 2))

    # ---- FeatureMixin hooks: one level per block; maps are NHWC natively ------------------
    _stem_level = False
    _native_fmt = "NHWC"
    _output_fmts = ("NCHW", "NHWC")

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self._embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x)
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(x.permute(0, 3, 1, 2))

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
        if prune_norm or num_stages < len(self.feature_info):
            self.neck = nn.Identity()

    def _prune_head(self) -> None:
        self.neck = nn.Identity()
        self.reset_classifier(0, "")

    # ---- checkpoint adaptation -------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample the position embedding and the global blocks' per-axis tables to the model's
        grid (e.g. a 1024 px SAM checkpoint into a 512 px model)."""
        own = model.state_dict()
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k in own and v.shape != own[k].shape:
                if k == "pos_embed":
                    v = resample_abs_pos_embed_nhwc(v, own[k].shape[1:3])
                elif k.endswith(("rel_pos_h", "rel_pos_w")):
                    v = resize_rel_pos(v, own[k].shape[0])
            out[k] = v
        return out


def _v(**kw: Any) -> Variant:
    return Variant(VisionTransformerSAM, **kw)


VARIANTS: dict[str, Variant] = {
    "samvit_base_patch16": _v(global_attn_indexes=(2, 5, 8, 11)),
    "samvit_large_patch16": _v(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "samvit_huge_patch16": _v(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "samvit_base_patch16_224": _v(img_size=224, global_attn_indexes=(2, 5, 8, 11), use_abs_pos=False,
                                  neck_chans=None, num_classes=1000),
}

register_family("vision_transformer_sam", VARIANTS)
