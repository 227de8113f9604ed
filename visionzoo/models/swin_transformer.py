"""Swin Transformer (Liu et al., 2021, "Hierarchical Vision Transformer using Shifted Windows").

A 4x4 patch embedding feeds four stages of transformer blocks that attend inside local windows;
every second block shifts the windows by half a window so information crosses window borders.
Between stages, patch merging concatenates each 2x2 neighbourhood (4C channels) and projects it
to 2C, halving the resolution. The S3 variants (Chen et al., 2022, "Searching the Search Space of
Vision Transformer") use per-stage window sizes. Feature maps are kept NHWC inside the model.

A model can be built for another ``img_size`` / ``window_size`` than its checkpoint: the
relative-position bias tables are resampled on load (:meth:`SwinTransformer.checkpoint_filter_fn`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import to_2tuple
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pool import SelectAdaptivePool2d
from ..layers.weight_init import init_weights_vit_style
from ..layers.window_attention import (WindowAttention, resize_rel_pos_bias_table, shifted_window_mask,
                                       window_partition, window_reverse)
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["SwinTransformer", "SwinTransformerBlock", "SwinTransformerStage", "PatchMerging", "VARIANTS"]

_Size = tuple[int, int]


def _window_and_shift(resolution: _Size, target_window: _Size, shifted: bool) -> tuple[_Size, _Size]:
    """A window no larger than the map; no shift when one window covers a dimension."""
    window = tuple(min(r, w) for r, w in zip(resolution, target_window))
    shift = tuple(0 if (not shifted or r <= w) else w // 2 for r, w in zip(resolution, target_window))
    return window, shift  # type: ignore[return-value]


def _pad_to(size: int, multiple: int) -> int:
    return (multiple - size % multiple) % multiple


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood (order: (0,0), (1,0), (0,1), (1,1) as (row, col)),
    normalise the 4C vector and project it linearly to ``out_dim``."""

    def __init__(self, dim: int, out_dim: int | None = None,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(merge_2x2(x)))


def merge_2x2(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, ceil(H/2), ceil(W/2), 4C]``: each 2x2 neighbourhood concatenated in
    the paper's x0, x1, x2, x3 order (odd sizes are zero-padded bottom/right)."""
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        h, w = h + h % 2, w + w % 2
    # [B, H/2, row, W/2, col, C] -> [B, H/2, W/2, col, row, C]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)


class SwinTransformerBlock(nn.Module):
    """``x + attn(norm1(x))`` over (shifted) windows, then ``x + mlp(norm2(x))``; NHWC in and out."""

    def __init__(self, dim: int, *, input_resolution: _Size, num_heads: int, window_size: int | _Size = 7,
                 shifted: bool = False, head_dim: int | None = None, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act_layer: LayerType = "gelu", norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.shifted = shifted
        self.target_window_size: _Size = to_2tuple(window_size)  # type: ignore[assignment]
        self.input_resolution: _Size = to_2tuple(input_resolution)  # type: ignore[assignment]
        self.window_size, self.shift_size = _window_and_shift(self.input_resolution, self.target_window_size, shifted)
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, num_heads, self.window_size, head_dim=head_dim, qkv_bias=qkv_bias,
                                    attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=get_act_layer(act_layer), drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.register_buffer("attn_mask", self._make_mask(), persistent=False)

    def _padded(self, h: int, w: int) -> _Size:
        return h + _pad_to(h, self.window_size[0]), w + _pad_to(w, self.window_size[1])

    def _make_mask(self, hw: _Size | None = None, device: torch.device | None = None) -> torch.Tensor | None:
        if self.shift_size[0] == 0 and self.shift_size[1] == 0:
            return None
        h, w = self.input_resolution if hw is None else hw
        hp, wp = self._padded(h, w)
        return shifted_window_mask(hp, wp, self.window_size, self.shift_size, device=device)

    def init_non_persistent_buffers(self) -> None:
        self.attn_mask = self._make_mask(device=self.norm1.weight.device)

    def set_input_size(self, input_resolution: _Size, window_size: int | _Size | None = None) -> None:
        """Re-derive window, shift and mask for a new map size (resamples the bias table)."""
        self.input_resolution = to_2tuple(input_resolution)  # type: ignore[assignment]
        if window_size is not None:
            self.target_window_size = to_2tuple(window_size)  # type: ignore[assignment]
        self.window_size, self.shift_size = _window_and_shift(self.input_resolution, self.target_window_size,
                                                              self.shifted)
        self.attn.set_window_size(self.window_size)
        self.init_non_persistent_buffers()

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        sh, sw = self.shift_size
        shifted = sh > 0 or sw > 0
        if shifted:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        hp, wp = self._padded(h, w)
        if hp != h or wp != w:
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        mask: torch.Tensor | None = None
        if shifted:
            attn_mask = self.attn_mask
            if attn_mask is not None and h == self.input_resolution[0] and w == self.input_resolution[1]:
                mask = attn_mask
            else:  # another input size: the mask of this one
                mask = self._make_mask((h, w), device=x.device)
        wh, ww = self.window_size
        windows = window_partition(x, self.window_size).reshape(-1, wh * ww, c)
        windows = self.attn(windows, mask=mask).reshape(-1, wh, ww, c)
        x = window_reverse(windows, self.window_size, hp, wp)[:, :h, :w, :]
        if shifted:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinTransformerStage(nn.Module):
    """Optional patch merging (halves the resolution) followed by alternating plain/shifted blocks.

    ``block_cls`` / ``merge_cls`` are the block and merging types (Swin V2 subclasses swap them)."""

    block_cls = SwinTransformerBlock
    merge_cls = PatchMerging

    def __init__(self, dim: int, out_dim: int, *, input_resolution: _Size, depth: int, num_heads: int,
                 window_size: int | _Size, downsample: bool = True, drop_path: Sequence[float] = (),
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm, **block_kwargs: Any) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.input_resolution = to_2tuple(input_resolution)
        if downsample:
            self.downsample: nn.Module = self.merge_cls(dim, out_dim, norm_layer=norm_layer)
            self.output_resolution = tuple((r + 1) // 2 for r in self.input_resolution)
        else:
            if dim != out_dim:
                raise ValueError("a stage without downsampling keeps its width")
            self.downsample = nn.Identity()
            self.output_resolution = self.input_resolution
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(*[
            self.block_cls(out_dim, input_resolution=self.output_resolution, num_heads=num_heads,
                                 window_size=window_size, shifted=bool(i % 2), drop_path=rates[i],
                                 norm_layer=norm_layer, **block_kwargs)
            for i in range(depth)])

    def set_input_size(self, input_resolution: _Size, window_size: int | _Size | None = None) -> None:
        self.input_resolution = to_2tuple(input_resolution)
        down = not isinstance(self.downsample, nn.Identity)
        self.output_resolution = tuple((r + 1) // 2 for r in self.input_resolution) if down else self.input_resolution
        for blk in self.blocks:
            blk.set_input_size(self.output_resolution, window_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class _NhwcClassifierHead(nn.Module):
    """Global pool over an NHWC map -> dropout -> fc (``pool_type=''`` applies fc per position)."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True, input_fmt="NHWC")
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._fc(num_classes)

    def _fc(self, num_classes: int) -> nn.Module:
        width = self.in_features * self.global_pool.feat_mult()
        return nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True, input_fmt="NHWC")
        self.fc = self._fc(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)


def _per_stage_windows(window_size: int | Sequence[Any], num_stages: int) -> list[_Size]:
    """``7`` -> every stage 7x7; a sequence with one entry per stage -> per stage; ``(h, w)`` -> all."""
    if isinstance(window_size, int):
        return [(window_size, window_size)] * num_stages
    ws = list(window_size)
    if len(ws) == num_stages:
        return [to_2tuple(w) for w in ws]  # type: ignore[misc]
    if len(ws) == 2 and all(isinstance(w, int) for w in ws):
        return [tuple(ws)] * num_stages  # type: ignore[list-item]
    raise ValueError(f"window_size {window_size!r} must be an int, (h, w) or one entry per stage")


class SwinTransformer(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Swin Transformer backbone; ``forward_features`` returns an NHWC map."""
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)
    stage_cls = SwinTransformerStage  # subclasses (Swin V2) swap the stage type

    def _stage_kwargs(self, index: int) -> dict[str, Any]:
        """Extra keyword arguments of stage ``index`` (none here; Swin V2 adds its own)."""
        return {}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        img_size: int | Sequence[int] = 224,
        patch_size: int = 4,
        window_size: int | Sequence[Any] = 7,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        head_dim: int | None = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        act_layer: LayerType = "gelu",
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.window_size = _per_stage_windows(window_size, num_stages)
        dims = [embed_dim * 2 ** i for i in range(num_stages)]

        self.output_fmt = "NHWC"  # layout of forward_features and of features_only maps
        # any input size works: the embedding pads to whole patches, blocks pad to whole windows
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                                      norm_layer=norm_layer, output_fmt="NHWC", dynamic_img_pad=True)
        res = tuple(-(-s // patch_size) for s in self.img_size)
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        reduction = patch_size
        prev = embed_dim
        for i in range(num_stages):
            stage = self.stage_cls(
                prev, dims[i], input_resolution=res, depth=depths[i], num_heads=num_heads[i],
                window_size=self.window_size[i], downsample=i > 0, drop_path=rates[i], norm_layer=norm_layer,
                head_dim=head_dim, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, act_layer=act_layer, **self._stage_kwargs(i))
            stages.append(stage)
            res = stage.output_resolution
            reduction *= 2 if i > 0 else 1
            prev = dims[i]
            self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"layers.{i}"))
        self.layers = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.norm = norm_layer(self.num_features)
        self.head = _NhwcClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(init_weights_vit_style)

    # --- interface -------------------------------------------------------------------------
    def set_input_size(self, img_size: int | Sequence[int] | None = None,
                       window_size: int | Sequence[Any] | None = None) -> None:
        """Rebuild windows, shifts and masks for a new image / window size at runtime."""
        if img_size is not None:
            self.img_size = to_2tuple(img_size)
        if window_size is not None:
            self.window_size = _per_stage_windows(window_size, len(self.layers))
        res = tuple(-(-s // self.patch_size) for s in self.img_size)
        for i, stage in enumerate(self.layers):
            stage.set_input_size(res, self.window_size[i])
            res = stage.output_resolution

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.layers(x)
        return self.norm(x)

    # --- FeatureMixin hooks: levels = stage outputs, computed NHWC, returned NCHW by default
    # ``norm=True`` applies the final norm to the last stage's map.
    _stem_level = False
    _native_fmt = "NHWC"
    _output_fmts = ("NCHW", "NHWC")
    _norm_is_final = True

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.patch_embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.layers)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.layers = self.layers[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Fit a checkpoint to ``model``: resample bias tables for other window sizes, drop derived
        buffers (index, mask) and convert the original Microsoft layout (merging at stage ends)."""
        own = model.state_dict()
        original = "head.weight" in state_dict and "head.fc.weight" not in state_dict
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k.endswith(("relative_position_index", "attn_mask")):
                continue
            if original:
                if k.startswith("head."):
                    k = k.replace("head.", "head.fc.", 1)
                elif k.startswith("layers.") and ".downsample." in k:
                    _, i, rest = k.split(".", 2)
                    k = f"layers.{int(i) + 1}.{rest}"
            if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
                v = resize_rel_pos_bias_table(v, model.get_submodule(k.rsplit(".", 1)[0]).window_size)
            out[k] = v
        return out


# --- variants ----------------------------------------------------------------------------------
def _swin(embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...], **kw: Any) -> Variant:
    return Variant(SwinTransformer, embed_dim=embed_dim, depths=depths, num_heads=num_heads, **kw)


_H_T, _H_B, _H_L = (3, 6, 12, 24), (4, 8, 16, 32), (6, 12, 24, 48)

VARIANTS: dict[str, Variant] = {
    "swin_tiny_patch4_window7_224": _swin(96, (2, 2, 6, 2), _H_T),
    "swin_small_patch4_window7_224": _swin(96, (2, 2, 18, 2), _H_T),
    "swin_base_patch4_window7_224": _swin(128, (2, 2, 18, 2), _H_B),
    "swin_base_patch4_window12_384": _swin(128, (2, 2, 18, 2), _H_B, window_size=12, img_size=384),
    "swin_large_patch4_window7_224": _swin(192, (2, 2, 18, 2), _H_L),
    "swin_large_patch4_window12_384": _swin(192, (2, 2, 18, 2), _H_L, window_size=12, img_size=384),
    "swin_s3_tiny_224": _swin(96, (2, 2, 6, 2), _H_T, window_size=(7, 7, 14, 7)),
    "swin_s3_small_224": _swin(96, (2, 2, 18, 2), _H_T, window_size=(14, 14, 14, 7)),
    "swin_s3_base_224": _swin(96, (2, 2, 30, 2), _H_T, window_size=(7, 7, 14, 7)),
}


register_family("swin_transformer", VARIANTS)
