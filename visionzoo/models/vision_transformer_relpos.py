"""ViT with relative position bias instead of an absolute position embedding.

Papers:
    * ViT: Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929
    * Continuous (log-spaced, MLP) relative position bias: Liu et al., 2022, "Swin Transformer V2",
      https://arxiv.org/abs/2111.09883
    * Relative position representations: Shaw et al., 2018, https://arxiv.org/abs/1803.02155

Every attention adds a per-head bias that depends only on the 2-D offset between two patches,
produced by a small MLP over log-spaced offsets (``rel_pos_type='mlp'``) or read from a learned
table (``'bias'``). The blocks are :mod:`visionzoo.models.vision_transformer`'s ``Block`` /
``ResPostBlock`` with their attention given the bias; ``shared_rel_pos`` computes one bias for all
blocks (the ``srelpos`` models). Without an absolute embedding the model runs at another grid by
rebuilding the bias (``set_input_size``); a table checkpoint is resampled on load.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.attention import Attention
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.patch_embed import PatchEmbed, resample_patch_embed
from ..layers.rel_pos_bias import RelPosBias, RelPosMlp
from ..layers.window_attention import resize_rel_pos_bias_table
from .base import Variant, register_family
from .vision_transformer import Block, ResPostBlock, VisionTransformer

__all__ = ["VisionTransformerRelPos", "RelPosAttention", "RelPosBlock", "ResPostRelPosBlock", "VARIANTS",
           "set_patch_embed_size"]


def _insert_before(parent: nn.Module, name: str, module: nn.Module, before: str) -> None:
    """Register ``module`` as ``parent.<name>`` just before child ``before`` (state_dict order
    of the published checkpoints, for modules added by a subclass after its base's ``__init__``)."""
    items = [(k, v) for k, v in parent._modules.items() if k != name]
    parent._modules.clear()
    for k, v in items:
        if k == before:
            parent._modules[name] = module
        parent._modules[k] = v


def set_patch_embed_size(pe: PatchEmbed, img_size: Optional[int | Sequence[int]] = None,
                         patch_size: Optional[int | Sequence[int]] = None) -> None:
    """Point a built :class:`PatchEmbed` at another input and/or patch size (kernel PI-resized)."""
    if patch_size is not None:
        new_patch = to_2tuple(patch_size)
        if new_patch != pe.patch_size:
            pe.proj.weight = nn.Parameter(resample_patch_embed(pe.proj.weight.detach(), new_patch))
            pe.proj.kernel_size = pe.proj.stride = new_patch
            pe.patch_size = new_patch
    if img_size is not None:
        pe.img_size = to_2tuple(img_size)
    if pe.img_size is not None:
        pe.grid_size = (pe.img_size[0] // pe.patch_size[0], pe.img_size[1] // pe.patch_size[1])
        pe.num_patches = pe.grid_size[0] * pe.grid_size[1]


class RelPosAttention(Attention):
    """:class:`~visionzoo.layers.attention.Attention` whose logits get a relative position bias
    from its own ``rel_pos`` module and/or one handed in (a shared bias) as ``attn_mask``."""

    def __init__(self, dim: int, num_heads: int = 8, rel_pos: Optional[nn.Module] = None, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        if rel_pos is not None:
            _insert_before(self, "rel_pos", rel_pos, "q_norm")
        else:
            self.rel_pos = None

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bias = attn_mask
        if self.rel_pos is not None:
            own = self.rel_pos.get_bias().to(x.dtype)
            bias = own if bias is None else own + bias
        return self.attend(x, attn_mask=bias)


class _RelPosAttnInit:
    """Constructor mixin for a ViT block class: build the block, then give it a
    :class:`RelPosAttention` (``rel_pos``: factory of its own bias module, ``None`` when the model
    shares one). Assigning an existing child keeps its place in the state_dict order."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, qk_norm: bool = False,
                 proj_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 rel_pos: Optional[Callable[[], nn.Module]] = None, **kwargs: Any) -> None:
        args = dict(qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias, proj_drop=proj_drop,
                    attn_drop=attn_drop, norm_layer=norm_layer)
        super().__init__(dim, num_heads, **args, **kwargs)  # type: ignore[call-arg]
        self.attn = RelPosAttention(dim, num_heads, rel_pos=rel_pos() if rel_pos is not None else None, **args)


class RelPosBlock(_RelPosAttnInit, Block):
    """Pre-norm ViT block with :class:`RelPosAttention`."""


class ResPostRelPosBlock(_RelPosAttnInit, ResPostBlock):
    """Residual post-norm ViT block (``x + norm(attn(x))``) with :class:`RelPosAttention`."""


_REL_BLOCKS = {"block": RelPosBlock, "res_post": ResPostRelPosBlock}


class VisionTransformerRelPos(VisionTransformer):
    """:class:`~visionzoo.models.vision_transformer.VisionTransformer` without position embedding,
    with a relative position bias in every attention.

    Args (beyond the ViT's):
        rel_pos_type: ``'mlp'`` (log-spaced continuous bias, :class:`RelPosMlp`) or ``'bias'``
            (learned table, :class:`RelPosBias`).
        rel_pos_dim: hidden width of the bias MLP.
        rel_pos_mode: ``'cr'`` (raw MLP output on ``ln(1+|d|)`` offsets) or ``'swin'``.
        shared_rel_pos: one bias module for all blocks (``shared_rel_pos``) instead of one per block.
        block_fn: ``'block'`` (pre-norm) or ``'res_post'`` (residual post-norm).
    """

    def __init__(self, *, img_size: int | Sequence[int] = 224, patch_size: int | Sequence[int] = 16,
                 global_pool: str = "avg", class_token: bool = False, qkv_bias: bool = False,
                 rel_pos_type: str = "mlp", rel_pos_dim: Optional[int] = None, rel_pos_mode: str = "cr",
                 shared_rel_pos: bool = False, block_fn: str = "block", num_heads: int = 12,
                 **kwargs: Any) -> None:
        for bad in ("pos_embed", "reg_tokens", "dynamic_img_size", "no_embed_class"):
            if kwargs.get(bad):
                raise ValueError(f"{bad} is not supported by the relative-position ViT "
                                 f"(use set_input_size() to change the grid)")
        kwargs.pop("pos_embed", None)
        if block_fn not in _REL_BLOCKS:
            raise ValueError(f"unknown block_fn {block_fn!r}; known: {', '.join(_REL_BLOCKS)}")
        img, patch = to_2tuple(img_size), to_2tuple(patch_size)
        grid = (img[0] // patch[0], img[1] // patch[1])
        prefix = 1 if class_token else 0
        if rel_pos_type == "mlp":
            rel_pos: Callable[[], nn.Module] = partial(RelPosMlp, grid, num_heads, hidden_dim=rel_pos_dim or 128,
                                                       prefix_tokens=prefix, mode=rel_pos_mode)
        elif rel_pos_type == "bias":
            rel_pos = partial(RelPosBias, grid, num_heads, prefix_tokens=prefix)
        else:
            raise ValueError(f"unknown rel_pos_type {rel_pos_type!r}; known: 'mlp', 'bias'")
        block = partial(_REL_BLOCKS[block_fn], rel_pos=None if shared_rel_pos else rel_pos)
        super().__init__(img_size=img_size, patch_size=patch_size, global_pool=global_pool,
                         class_token=class_token, qkv_bias=qkv_bias, num_heads=num_heads, pos_embed="none",
                         block_fn=block, **kwargs)
        self.rel_pos_type = rel_pos_type
        if shared_rel_pos:
            _insert_before(self, "shared_rel_pos", rel_pos(), "pos_drop")
        else:
            self.shared_rel_pos = None

    # ---- bias bookkeeping --------------------------------------------------------------------
    def _rel_pos_modules(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (RelPosMlp, RelPosBias))]

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        """Rebuild the bias index/coordinate tables (after meta-device construction)."""
        super().init_non_persistent_buffers()
        for m in self._rel_pos_modules():
            m.init_non_persistent_buffers()

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def set_input_size(self, img_size: Optional[int | Sequence[int]] = None,
                       patch_size: Optional[int | Sequence[int]] = None) -> None:
        """Run a built model at another input (and/or patch) size: the bias MLP's coordinate table
        is rebuilt for the new grid (a bias table is resampled); the patch kernel is PI-resized."""
        set_patch_embed_size(self.patch_embed, img_size, patch_size)
        for m in self._rel_pos_modules():
            m.set_window_size(self.patch_embed.grid_size)
        for info in self.feature_info:
            info["reduction"] = self.patch_embed.patch_size[0]

    # ---- forward -----------------------------------------------------------------------------
    def _shared_bias(self) -> Optional[torch.Tensor]:
        if self.shared_rel_pos is None:
            return None
        return self.shared_rel_pos.get_bias()

    def _run_block_bias(self, blk: nn.Module, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(blk, x) if bias is None else checkpoint_module(blk, x, bias)
        return blk(x, bias)

    @torch.jit.unused
    def _checkpointed(self, index: int, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        return self._run_block_bias(self.blocks[index], x, bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        bias = self._shared_bias()
        for i, blk in enumerate(self.blocks):
            # TorchScript: the checkpointed path (a module-typed helper) is never compiled
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = self._checkpointed(i, x, bias)
            else:
                x = blk(x, bias)
        return self.norm(x)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self._run_block_bias(stage, x, self._shared_bias())

    # ---- checkpoint adaptation ---------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                             interpolation: str = "bicubic", antialias: bool = True) -> dict[str, torch.Tensor]:
        """The ViT filter (patch kernel resize), derived index/coordinate buffers dropped, and
        learned bias tables resampled to the model's grid (e.g. a 224 px checkpoint into a 384 px
        model). Bias MLPs need nothing: they are evaluated on the new grid's offsets."""
        sd = {k: v for k, v in state_dict.items()
              if not k.endswith(("relative_position_index", "rel_coords_log"))}
        out = VisionTransformer.checkpoint_filter_fn(sd, model, interpolation=interpolation, antialias=antialias)
        own = model.state_dict()
        for k, v in out.items():
            if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
                window = model.get_submodule(k.rsplit(".", 1)[0]).window_size
                out[k] = resize_rel_pos_bias_table(v, window)
        return out


def _size(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> dict[str, Any]:
    return dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio)


_v = partial(Variant, VisionTransformerRelPos)
_SMALL, _MEDIUM, _BASE, _PLUS = _size(384, 12, 6), _size(512, 12, 8), _size(768, 12, 12), _size(896, 12, 14)
_LS = dict(init_values=1e-5)
_RPN = dict(block_fn="res_post", fc_norm=False, init_values=1e-5)

VARIANTS: dict[str, Variant] = {
    "vit_relpos_base_patch32_plus_rpn_256": _v(**_PLUS, **_RPN, patch_size=32, img_size=256, qkv_bias=True),
    "vit_relpos_base_patch16_plus_240": _v(**_PLUS, **_LS, img_size=240, qkv_bias=True, fc_norm=False),
    "vit_relpos_small_patch16_224": _v(**_SMALL, **_LS, fc_norm=True),
    "vit_relpos_medium_patch16_224": _v(**_MEDIUM, **_LS, fc_norm=True),
    "vit_relpos_base_patch16_224": _v(**_BASE, **_LS, fc_norm=True),
    "vit_srelpos_small_patch16_224": _v(**_SMALL, **_LS, fc_norm=False, rel_pos_dim=384, shared_rel_pos=True),
    "vit_srelpos_medium_patch16_224": _v(**_MEDIUM, **_LS, fc_norm=False, rel_pos_dim=512, shared_rel_pos=True),
    "vit_relpos_medium_patch16_cls_224": _v(**_MEDIUM, **_LS, rel_pos_dim=256, class_token=True,
                                            global_pool="token"),
    "vit_relpos_base_patch16_cls_224": _v(**_BASE, **_LS, class_token=True, global_pool="token"),
    "vit_relpos_base_patch16_clsgap_224": _v(**_BASE, **_LS, fc_norm=True, class_token=True),
    "vit_relpos_small_patch16_rpn_224": _v(**_SMALL, **_RPN),
    "vit_relpos_medium_patch16_rpn_224": _v(**_MEDIUM, **_RPN),
    "vit_relpos_base_patch16_rpn_224": _v(**_BASE, **_RPN),
    "test_vit_relpos": _v(**_size(96, 9, 3, 2.0), **_LS, img_size=160, fc_norm=True),
}

register_family("vision_transformer_relpos", VARIANTS)
