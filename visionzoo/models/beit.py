"""BEiT (Bao et al., 2022, "BEiT: BERT Pre-Training of Image Transformers",
https://arxiv.org/abs/2106.08254) and BEiT v2 (Peng et al., 2022, https://arxiv.org/abs/2208.06366).

A pre-norm ViT without absolute position embedding: every block's attention adds a learned
relative position bias (one value per head for each 2-D offset between two patches, plus three
entries for class->patch, patch->class and class->class), blocks carry layer scale, and the
classifier averages the patch tokens (``fc_norm``). The transformer itself is the EVA one
(:class:`visionzoo.models.eva.Eva`), with :class:`RelPosBiasAttention` as its attention.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.helpers import to_2tuple
from ..layers.weight_init import trunc_normal_
from .base import Variant, register_family
from .eva import Eva, EvaAttention

__all__ = ["Beit", "RelPosBiasAttention", "relative_position_index", "resize_rel_pos_bias_table", "VARIANTS"]


def relative_position_index(window: Sequence[int], device: Optional[torch.device] = None) -> torch.Tensor:
    """``[1 + N, 1 + N]`` indices into the bias table for a class token plus an ``H x W`` window.

    Patch pair ``(i, j)`` reads entry ``(dy + H - 1) * (2W - 1) + (dx + W - 1)`` of its offset
    ``i - j``; the last three entries are class->patch, patch->class and class->class.
    """
    h, w = int(window[0]), int(window[1])
    num_grid = (2 * h - 1) * (2 * w - 1)
    ys = torch.arange(h, device=device).repeat_interleave(w)
    xs = torch.arange(w, device=device).repeat(h)
    dy = ys[:, None] - ys[None, :] + (h - 1)
    dx = xs[:, None] - xs[None, :] + (w - 1)
    n = h * w
    index = torch.empty(n + 1, n + 1, dtype=torch.long, device=device)
    index[1:, 1:] = dy * (2 * w - 1) + dx
    index[0, :] = num_grid
    index[:, 0] = num_grid + 1
    index[0, 0] = num_grid + 2
    return index


def resize_rel_pos_bias_table(table: torch.Tensor, new_window: Sequence[int],
                              old_window: Optional[Sequence[int]] = None, num_extra: int = 3,
                              interpolation: str = "bicubic") -> torch.Tensor:
    """Resample a ``[(2H-1)(2W-1) + extra, heads]`` bias table to the offsets of ``new_window``.

    The offset grid is treated as a ``(2H-1) x (2W-1)`` image per head and resized; the extra
    (class-token) entries are kept. ``old_window`` defaults to the square one the table fits.
    """
    num_grid = table.shape[0] - num_extra
    if old_window is None:
        side = int(round(num_grid ** 0.5))
        old_hw = ((side + 1) // 2, (side + 1) // 2)
    else:
        old_hw = (int(old_window[0]), int(old_window[1]))
    old_size = (2 * old_hw[0] - 1, 2 * old_hw[1] - 1)
    new_size = (2 * int(new_window[0]) - 1, 2 * int(new_window[1]) - 1)
    if old_size[0] * old_size[1] != num_grid:
        raise ValueError(f"bias table with {num_grid} offsets does not fit window {old_hw}")
    if old_size == new_size:
        return table
    grid, extra = table[:num_grid], table[num_grid:]
    heads = table.shape[1]
    img = grid.t().reshape(1, heads, old_size[0], old_size[1]).float()
    img = F.interpolate(img, size=new_size, mode=interpolation, align_corners=False)
    grid = img.reshape(heads, -1).t().to(table.dtype)
    return torch.cat([grid, extra], dim=0)


class RelPosBiasAttention(EvaAttention):
    """:class:`EvaAttention` plus a learned relative position bias for a class token and a
    ``window_size`` patch grid (``relative_position_bias_table`` ``[(2H-1)(2W-1)+3, heads]``)."""

    def __init__(self, dim: int, num_heads: int, window_size: Sequence[int] = (14, 14), **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.window_size = tuple(int(w) for w in window_size)
        num_rel = (2 * self.window_size[0] - 1) * (2 * self.window_size[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size),
                             persistent=False)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        if not self.relative_position_index.is_meta:
            self.relative_position_index.copy_(relative_position_index(self.window_size,
                                                                       self.relative_position_index.device))

    def set_window_size(self, window_size: Sequence[int]) -> None:
        """Resample the bias table to a new patch grid and rebuild the index."""
        new = (int(window_size[0]), int(window_size[1]))
        if new == self.window_size:
            return
        table = resize_rel_pos_bias_table(self.relative_position_bias_table.detach(), new, self.window_size)
        self.relative_position_bias_table = nn.Parameter(table)
        self.window_size = new
        self.relative_position_index = relative_position_index(new, table.device)

    def rel_pos_bias(self) -> torch.Tensor:
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bias = self.rel_pos_bias().to(x.dtype)
        if attn_mask is not None:
            bias = bias + attn_mask
        return self._attend(x, rope, bias)


class Beit(Eva):
    """BEiT: :class:`~visionzoo.models.eva.Eva` with per-block relative position bias, no absolute
    position embedding and no RoPE. ``set_input_size`` resamples every bias table; pretrained
    tables are resampled on load by :meth:`checkpoint_filter_fn`."""

    def __init__(self, *, img_size: int | Sequence[int] = 224, patch_size: int | Sequence[int] = 16,
                 dynamic_img_size: bool = False, **kwargs: Any) -> None:
        if dynamic_img_size:
            raise ValueError("BEiT's relative position bias is made for one grid; use set_input_size() instead")
        img, patch = to_2tuple(img_size), to_2tuple(patch_size)
        window = (img[0] // patch[0], img[1] // patch[1])
        kwargs.setdefault("use_abs_pos_emb", False)
        kwargs.setdefault("init_values", 0.1)
        super().__init__(img_size=img_size, patch_size=patch_size,
                         attn_layer=partial(RelPosBiasAttention, window_size=window), **kwargs)

    def set_input_size(self, img_size: Optional[int | Sequence[int]] = None,
                       patch_size: Optional[int | Sequence[int]] = None) -> None:
        super().set_input_size(img_size=img_size, patch_size=patch_size)
        grid = self.patch_embed.grid_size
        for blk in self.blocks:
            blk.attn.set_window_size(grid)

    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                             interpolation: str = "bicubic", antialias: bool = True) -> dict[str, torch.Tensor]:
        """:meth:`Eva.checkpoint_filter_fn` plus the bias tables resampled to the model's grid
        (a 224 checkpoint loaded into a 384 model); stored index buffers are dropped."""
        own = model.state_dict()
        sd = {k: v for k, v in state_dict.items() if not k.endswith("relative_position_index")}
        out = Eva.checkpoint_filter_fn(sd, model, interpolation=interpolation, antialias=antialias)
        for k, v in out.items():
            if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
                attn = model.get_submodule(k.rsplit(".", 1)[0])
                out[k] = resize_rel_pos_bias_table(v, attn.window_size, interpolation=interpolation)
        return out


_BASE = dict(embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072)
_LARGE = dict(embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096)
_LARGE_V2 = dict(_LARGE, init_values=1e-5)

VARIANTS: dict[str, Variant] = {
    "beit_base_patch16_224": Variant(Beit, **_BASE),
    "beit_base_patch16_384": Variant(Beit, **_BASE, img_size=384),
    "beit_large_patch16_224": Variant(Beit, **_LARGE, init_values=1e-5),
    "beit_large_patch16_384": Variant(Beit, **_LARGE, img_size=384, init_values=1e-5),
    "beit_large_patch16_512": Variant(Beit, **_LARGE, img_size=512, init_values=1e-5),
    "beitv2_base_patch16_224": Variant(Beit, **_BASE, init_values=1e-5),
    "beitv2_large_patch16_224": Variant(Beit, **_LARGE_V2),
}

register_family("beit", VARIANTS)
