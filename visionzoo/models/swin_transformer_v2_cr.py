"""Swin Transformer V2, Christoph Reich's formulation ("cr", timm-trained checkpoints).

The Swin V2 ideas (Liu et al., 2022: residual post-norm, scaled cosine attention, a continuous
position bias from an MLP on log-spaced offsets) in a different checkpoint layout:

* the position-bias "meta" MLP reads raw offsets ``sign(d) ln(1 + |d|)`` and its output is used
  directly (no ``16 * sigmoid``); the attention has a full ``qkv`` bias;
* patch merging is Swin V1's (normalise 4C, then project), at the start of each later stage;
* there is no final norm: the last block of the last stage ends with an extra LayerNorm
  (``norm3``); huge/giant models also add one every ``extra_norm_period`` blocks, the ``ns``
  models at the end of every stage (``extra_norm_stage``);
* ``forward_features`` and feature maps are NCHW; the default window is ``img_size // 32``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..layers.cosine_window_attention import MetaCosineWindowAttention
from ..layers.drop import drop_path_rates
from ..layers.helpers import to_2tuple
from ..layers.patch_embed import PatchEmbed
from ..layers.pool import ClassifierHead
from ..layers.weight_init import init_weights_vit_style
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family
from .swin_transformer import SwinTransformerStage
from .swin_transformer_v2 import SwinTransformerV2Block, _Size

__all__ = ["SwinTransformerV2Cr", "SwinTransformerV2CrBlock", "VARIANTS"]


class SwinTransformerV2CrBlock(SwinTransformerV2Block):
    """Post-norm Swin V2 block with the meta-MLP attention and an optional trailing ``norm3``."""

    def __init__(self, dim: int, **kwargs: Any) -> None:
        super().__init__(dim, **kwargs)
        self.norm3 = nn.Identity()  # replaced by a LayerNorm where the stage asks for one

    def _build_attn(self, dim: int, num_heads: int, pretrained_window_size: int | _Size, qkv_bias: bool,
                    attn_drop: float, proj_drop: float) -> nn.Module:
        return MetaCosineWindowAttention(dim, num_heads, self.window_size, attn_drop=attn_drop, proj_drop=proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self._attn(x)))
        x = x + self.drop_path2(self.norm2(self.mlp(x)))
        return self.norm3(x)


class SwinTransformerV2CrStage(SwinTransformerStage):
    """Swin V1 patch merging, then "cr" blocks; ``extra_norms`` lists the blocks ending in ``norm3``."""

    block_cls = SwinTransformerV2CrBlock

    def __init__(self, dim: int, out_dim: int, *, extra_norms: Sequence[int] = (),
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm, **kwargs: Any) -> None:
        super().__init__(dim, out_dim, norm_layer=norm_layer, **kwargs)
        for i in extra_norms:
            self.blocks[i].norm3 = norm_layer(out_dim)


def _extra_norms(depth: int, period: int, stage_end: bool, last_stage: bool) -> list[int]:
    """Blocks of a stage that end with an extra norm: every ``period``-th, and the stage's last one
    with ``stage_end`` or in the last stage (it stands in for the final norm)."""
    picked = {i for i in range(depth) if period and (i + 1) % period == 0}
    if stage_end or last_stage:
        picked.add(depth - 1)
    return sorted(picked)


class SwinTransformerV2Cr(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Swin V2 "cr" backbone: NHWC inside, NCHW out of ``forward_features`` and feature maps."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        img_size: int | Sequence[int] = 224,
        patch_size: int = 4,
        window_size: int | None = None,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 4.0,
        extra_norm_period: int = 0,
        extra_norm_stage: bool = False,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.window_size = to_2tuple(window_size) if window_size else tuple(s // 32 for s in self.img_size)
        self.output_fmt = "NCHW"
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                      norm_layer=norm_layer, output_fmt="NHWC", dynamic_img_pad=True)
        res = tuple(-(-s // patch_size) for s in self.img_size)
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        prev = embed_dim
        for i in range(num_stages):
            dim = embed_dim * 2 ** i
            stage = SwinTransformerV2CrStage(
                prev, dim, input_resolution=res, depth=depths[i], num_heads=num_heads[i],
                window_size=self.window_size, downsample=i > 0, drop_path=rates[i], norm_layer=norm_layer,
                extra_norms=_extra_norms(depths[i], extra_norm_period, extra_norm_stage, i == num_stages - 1),
                mlp_ratio=mlp_ratio, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate)
            stages.append(stage)
            res, prev = stage.output_resolution, dim
            self.feature_info.append(dict(num_chs=dim, reduction=patch_size * 2 ** i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(init_weights_vit_style)

    def set_input_size(self, img_size: int | Sequence[int] | None = None, window_size: int | None = None) -> None:
        """Rebuild windows, shifts, masks and position-bias coordinates for another image/window size."""
        if img_size is not None:
            self.img_size = to_2tuple(img_size)
        if window_size is not None:
            self.window_size = to_2tuple(window_size)
        res = tuple(-(-s // self.patch_size) for s in self.img_size)
        for stage in self.stages:
            stage.set_input_size(res, self.window_size)
            res = stage.output_resolution

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._final(self.stages(self.patch_embed(x)))

    # --- FeatureMixin hooks: levels = stage outputs, NHWC inside, NCHW by default ------------
    _stem_level = False
    _native_fmt = "NHWC"
    _output_fmts = ("NCHW", "NHWC")

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.patch_embed(x), None

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Drop derived buffers (coordinate tables, masks); the head's ``head.*`` -> ``head.fc.*``."""
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k.endswith(("relative_coordinates_log", "attn_mask")):
                continue
            if k.startswith("head.") and not k.startswith("head.fc."):
                k = "head.fc." + k[len("head."):]
            out[k] = v
        return out


# --- variants ----------------------------------------------------------------------------------
_T = Variant(SwinTransformerV2Cr, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_S = _T.but(depths=(2, 2, 18, 2))
_B = _T.but(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_L = _T.but(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48))
_H = _T.but(embed_dim=352, depths=(2, 2, 18, 2), num_heads=(8, 16, 32, 64), extra_norm_period=6)
_G = _T.but(embed_dim=512, depths=(2, 2, 42, 2), num_heads=(16, 32, 64, 128), extra_norm_period=6)

VARIANTS: dict[str, Variant] = {
    "swinv2_cr_tiny_384": _T.but(img_size=384),
    "swinv2_cr_tiny_224": _T,
    "swinv2_cr_tiny_ns_224": _T.but(extra_norm_stage=True),
    "swinv2_cr_small_384": _S.but(img_size=384),
    "swinv2_cr_small_224": _S,
    "swinv2_cr_small_ns_224": _S.but(extra_norm_stage=True),
    "swinv2_cr_small_ns_256": _S.but(extra_norm_stage=True, img_size=256),
    "swinv2_cr_base_384": _B.but(img_size=384),
    "swinv2_cr_base_224": _B,
    "swinv2_cr_base_ns_224": _B.but(extra_norm_stage=True),
    "swinv2_cr_large_384": _L.but(img_size=384),
    "swinv2_cr_large_224": _L,
    "swinv2_cr_huge_384": _H.but(img_size=384, num_heads=(11, 22, 44, 88)),
    "swinv2_cr_huge_224": _H,
    "swinv2_cr_giant_384": _G.but(img_size=384),
    "swinv2_cr_giant_224": _G,
}

register_family("swin_transformer_v2_cr", VARIANTS)
