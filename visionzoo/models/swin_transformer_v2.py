"""Swin Transformer V2 (Liu et al., 2022, "Swin Transformer V2: Scaling Up Capacity and Resolution").

The Swin layout (:mod:`.swin_transformer`: patch embedding, shifted windows, 2x2 patch merging,
NHWC maps) with three changes for training stability and resolution transfer:

* residual post-norm: ``x + norm(attn(x))`` and ``x + norm(mlp(x))``; patch merging projects
  first and normalises the 2C output;
* scaled cosine attention with a learned per-head temperature;
* a continuous, log-spaced relative position bias (a small MLP), so a checkpoint trained with
  ``pretrained_window_sizes`` runs at larger windows / images (the ``12to16_192to256`` models) with
  no table to resample: :meth:`SwinTransformerV2.set_input_size` just recomputes coordinates.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType, get_act_layer
from ..layers.cosine_window_attention import CosineWindowAttention
from ..layers.drop import DropPath
from ..layers.helpers import to_2tuple
from ..layers.mlp import Mlp
from .base import Variant, register_family
from .swin_transformer import (SwinTransformer, SwinTransformerBlock, SwinTransformerStage, _window_and_shift,
                               merge_2x2)

__all__ = ["SwinTransformerV2", "SwinTransformerV2Block", "PatchMergingV2", "VARIANTS"]

_Size = tuple[int, int]


class PatchMergingV2(nn.Module):
    """2x2 patch merging, V2 order: project 4C -> ``out_dim`` first, then normalise."""

    def __init__(self, dim: int, out_dim: int | None = None,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)
        self.norm = norm_layer(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(merge_2x2(x)))


class SwinTransformerV2Block(SwinTransformerBlock):
    """``x + norm1(attn(x))`` over (shifted) windows, then ``x + norm2(mlp(x))``; NHWC in and out.

    Window partition, shift, padding and masks are the Swin block's; only the attention and the
    position of the norms differ (parameter order follows the V2 checkpoints: attn, norm1, mlp, norm2).
    """

    def __init__(self, dim: int, *, input_resolution: _Size, num_heads: int, window_size: int | _Size = 7,
                 shifted: bool = False, pretrained_window_size: int | _Size = 0, head_dim: int | None = None,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, act_layer: LayerType = "gelu",
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        nn.Module.__init__(self)  # the Swin block's modules are registered in another order
        if head_dim is not None and head_dim * num_heads != dim:
            raise ValueError("Swin V2 attention uses head_dim = dim // num_heads")
        self.shifted = shifted
        self.target_window_size: _Size = to_2tuple(window_size)  # type: ignore[assignment]
        self.input_resolution: _Size = to_2tuple(input_resolution)  # type: ignore[assignment]
        self.window_size, self.shift_size = _window_and_shift(self.input_resolution, self.target_window_size, shifted)
        self.attn = self._build_attn(dim, num_heads, pretrained_window_size, qkv_bias, attn_drop, proj_drop)
        self.norm1 = norm_layer(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=get_act_layer(act_layer), drop=proj_drop)
        self.norm2 = norm_layer(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.register_buffer("attn_mask", self._make_mask(), persistent=False)

    def _build_attn(self, dim: int, num_heads: int, pretrained_window_size: int | _Size, qkv_bias: bool,
                    attn_drop: float, proj_drop: float) -> nn.Module:
        """The window attention module (the "cr" variant swaps it)."""
        return CosineWindowAttention(dim, num_heads, self.window_size, pretrained_window_size=pretrained_window_size,
                                     qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self._attn(x)))
        return x + self.drop_path2(self.norm2(self.mlp(x)))


class SwinTransformerV2Stage(SwinTransformerStage):
    """A Swin stage built from V2 blocks and V2 patch merging."""

    block_cls = SwinTransformerV2Block
    merge_cls = PatchMergingV2


class SwinTransformerV2(SwinTransformer):
    """Swin Transformer V2 backbone; ``forward_features`` returns an NHWC map.

    ``pretrained_window_sizes`` (one per stage, 0 = this model's window) fixes the range the
    position-bias MLP was trained on, for checkpoints fine-tuned at a larger window.
    """

    stage_cls = SwinTransformerV2Stage

    def __init__(self, *, pretrained_window_sizes: Sequence[int] = (0, 0, 0, 0), **kwargs: Any) -> None:
        self.pretrained_window_sizes = tuple(pretrained_window_sizes)  # read by _stage_kwargs during __init__
        super().__init__(**kwargs)

    def _stage_kwargs(self, index: int) -> dict[str, Any]:
        return {"pretrained_window_size": self.pretrained_window_sizes[index]}

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Drop derived tables (coordinates, index, mask); convert the original Microsoft layout
        (``head.*``, patch merging stored at the end of the previous stage)."""
        kept = {k: v for k, v in state_dict.items() if not k.endswith("relative_coords_table")}
        return SwinTransformer.checkpoint_filter_fn(kept, model)


# --- variants ----------------------------------------------------------------------------------
_T = Variant(SwinTransformerV2, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), img_size=256)
_S = _T.but(depths=(2, 2, 18, 2))
_B = _T.but(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_L = _T.but(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
_FT = (12, 12, 12, 6)  # windows of the 192 px in22k pretraining, per stage

VARIANTS: dict[str, Variant] = {
    "swinv2_tiny_window16_256": _T.but(window_size=16),
    "swinv2_tiny_window8_256": _T.but(window_size=8),
    "swinv2_small_window16_256": _S.but(window_size=16),
    "swinv2_small_window8_256": _S.but(window_size=8),
    "swinv2_base_window16_256": _B.but(window_size=16),
    "swinv2_base_window8_256": _B.but(window_size=8),
    "swinv2_base_window12_192": _B.but(window_size=12, img_size=192),
    "swinv2_base_window12to16_192to256": _B.but(window_size=16, pretrained_window_sizes=_FT),
    "swinv2_base_window12to24_192to384": _B.but(window_size=24, img_size=384, pretrained_window_sizes=_FT),
    "swinv2_large_window12_192": _L.but(window_size=12, img_size=192),
    "swinv2_large_window12to16_192to256": _L.but(window_size=16, pretrained_window_sizes=_FT),
    "swinv2_large_window12to24_192to384": _L.but(window_size=24, img_size=384, pretrained_window_sizes=_FT),
}

register_family("swin_transformer_v2", VARIANTS)
