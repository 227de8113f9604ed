"""Hiera (Ryali et al., 2023, "Hiera: A Hierarchical Vision Transformer without the Bells-and-Whistles").

A plain stack of pre-norm transformer blocks made hierarchical by pooling only. The tokens are
*unrolled* once after the patch embedding: with strides ``s1, s2, s3`` (2x2 each) the sequence
is ordered ``[s1, s2, s3, y, x]``, so that

* a 2x2 max-pool of the current grid is a max over the leading group of tokens (no reshapes);
* the tokens of one mask unit (8x8 patches at the first stage) are strided by a constant, so
  *mask-unit attention* (local attention inside each unit, used in the first two stages) is a
  reshape of the sequence into ``[windows, tokens per window]``.

A stage transition projects the normed tokens to the wider width and max-pools them for the
shortcut, while the attention pools its queries. Feature maps are *rerolled* from that order back
to raster order. ``abswin`` variants use a global + tiled window absolute position embedding.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.helpers import to_2tuple
from ..layers.hiera_utils import NormPoolHead, abs_win_pos_embed, max_pool_tokens, mean_pool_tokens
from ..layers.layer_scale import LayerScale
from ..layers.mlp import Mlp
from ..layers.pos_embed import resample_abs_pos_embed
from .base import ClassifierHeadMixin, FeatureMixin, Variant, convert_fmt, register_family

__all__ = ["Hiera", "HieraBlock", "MaskUnitAttention", "unroll", "reroll", "VARIANTS"]


def unroll(x: torch.Tensor, size: tuple[int, int], strides: list[tuple[int, int]]) -> torch.Tensor:
    """Raster-order tokens ``[B, H*W, C]`` -> Hiera order ``[s1, s2, ..., y, x]`` per image.

    Each step splits the grid into ``(sy, sx)`` sub-grids and moves the offset in front: after
    ``k`` steps token ``(y, x)`` with ``y = y_k * prod(sy) + ... + sy_1`` sits at
    ``[sy_1, sx_1, ..., sy_k, sx_k, y_k, x_k]``.
    """
    b, _, c = x.shape
    h, w = int(size[0]), int(size[1])
    x = x.reshape(b, h, w, c)
    n = b
    for s in strides:
        sy, sx = int(s[0]), int(s[1])
        h, w = h // sy, w // sx
        x = x.reshape(n, h, sy, w, sx, c).permute(0, 2, 4, 1, 3, 5).reshape(n * sy * sx, h, w, c)
        n = n * sy * sx
    return x.reshape(b, -1, c)


def reroll(x: torch.Tensor, size: tuple[int, int], strides: list[tuple[int, int]]) -> torch.Tensor:
    """Inverse of :func:`unroll`: Hiera-ordered ``[B, N, C]`` on a ``size`` grid -> ``[B, H, W, C]``."""
    b, _, c = x.shape
    k = len(strides)
    hk, wk = int(size[0]), int(size[1])
    for s in strides:
        hk, wk = hk // int(s[0]), wk // int(s[1])
    dims: list[int] = [b]
    for s in strides:
        dims += [int(s[0]), int(s[1])]
    x = x.reshape(dims + [hk, wk, c])
    # y = (y_k, sy_k, ..., sy_1) most to least significant; the same for x
    perm = [0, 1 + 2 * k] + [1 + 2 * i for i in range(k - 1, -1, -1)]
    perm += [2 + 2 * k] + [2 + 2 * i for i in range(k - 1, -1, -1)] + [3 + 2 * k]
    return x.permute(perm).reshape(b, int(size[0]), int(size[1]), c)


class MaskUnitAttention(nn.Module):
    """Attention within mask units (or globally); queries max-pooled by ``q_stride`` tokens.

    Unrolled order puts each unit's ``window_size * q_stride`` tokens at a constant stride, so the
    sequence reshapes to ``[B, heads, windows, tokens, head_dim]`` directly."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int = 1, window_size: int = 0,
                 use_mask_unit_attn: bool = False) -> None:
        super().__init__()
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.head_dim = dim_out // num_heads
        self.q_stride = q_stride
        self.window_size = window_size
        self.use_mask_unit_attn = use_mask_unit_attn
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        windows = n // (self.q_stride * self.window_size) if self.use_mask_unit_attn else 1
        qkv = self.qkv(x).reshape(b, -1, windows, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 2, 1, 5)
        q, k, v = qkv.unbind(0)  # [B, heads, windows, tokens, head_dim]
        if self.q_stride > 1:
            q = q.reshape(b, self.num_heads, windows, self.q_stride, -1, self.head_dim).amax(dim=3)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 3).reshape(b, -1, self.dim_out)  # [B, tokens, windows, heads * head_dim]
        return self.proj(x)


def add_block_tail(block: nn.Module, dim_out: int, mlp_ratio: float, drop_path: float,
                   init_values: Optional[float]) -> None:
    """Register what follows the attention in Hiera / Hiera-Det blocks, in checkpoint order:
    ``ls1, drop_path1, norm2, mlp, ls2, drop_path2`` (layer scale only with ``init_values``)."""
    block.ls1 = LayerScale(dim_out, init_values) if init_values is not None else nn.Identity()
    block.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
    block.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
    block.mlp = Mlp(dim_out, int(dim_out * mlp_ratio), act_layer=nn.GELU)
    block.ls2 = LayerScale(dim_out, init_values) if init_values is not None else nn.Identity()
    block.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()


class HieraBlock(nn.Module):
    """Pre-norm block; at a stage transition the normed input is projected and max-pooled for the
    shortcut while the attention pools its queries."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 q_stride: int = 1, window_size: int = 0, use_mask_unit_attn: bool = False,
                 init_values: Optional[float] = None, use_expand_proj: bool = True) -> None:
        super().__init__()
        self.dim, self.dim_out, self.q_stride = dim, dim_out, q_stride
        self.expand_proj = use_expand_proj
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if dim != dim_out and not use_expand_proj and dim_out != 2 * dim:
            raise ValueError("a transition without projection doubles the width (max | mean pooled)")
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out and use_expand_proj else nn.Identity()
        self.attn = MaskUnitAttention(dim, dim_out, num_heads, q_stride, window_size, use_mask_unit_attn)
        add_block_tail(self, dim_out, mlp_ratio, drop_path, init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        if self.dim != self.dim_out:
            if self.expand_proj:
                x = max_pool_tokens(self.proj(x_norm), self.q_stride)
            else:  # parameter-free widening: max- and mean-pooled shortcut side by side
                x = torch.cat([max_pool_tokens(x, self.q_stride), mean_pool_tokens(x, self.q_stride)], dim=-1)
        x = x + self.drop_path1(self.ls1(self.attn(x_norm)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class _ConvPatchEmbed(nn.Module):
    """Overlapping conv patch embedding (7x7, stride 4, padding 3); NCHW map out."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, tuple(kernel), tuple(stride), tuple(padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def stage_layout(stages: Sequence[int], q_pool: int) -> tuple[list[int], list[int]]:
    """(index of each stage's last block, indices of the blocks that pool: the first of each of
    the next ``q_pool`` stages)."""
    ends = [sum(stages[:i + 1]) - 1 for i in range(len(stages))]
    return ends, [e + 1 for e in ends[:q_pool]]


class Hiera(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Hiera image model: ``forward_features`` returns tokens ``[B, N, C]`` (raster order after the
    last pooling); feature maps are rerolled NCHW (or NHWC) grids."""

    feature_cfg = {"feature_cls": "getter"}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        img_size: int | Sequence[int] = 224,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        q_pool: int = 3,
        q_stride: Sequence[int] = (2, 2),
        mask_unit_size: Sequence[int] = (8, 8),
        mask_unit_attn: Sequence[bool] = (True, True, False, False),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        patch_kernel: Sequence[int] = (7, 7),
        patch_stride: Sequence[int] = (4, 4),
        patch_padding: Sequence[int] = (3, 3),
        mlp_ratio: float = 4.0,
        init_values: Optional[float] = None,
        use_expand_proj: bool = True,
        abs_win_pos_embed: bool = False,
        global_pos_size: Sequence[int] = (14, 14),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.img_size = to_2tuple(img_size)
        self.patch_stride = (int(patch_stride[0]), int(patch_stride[1]))
        self.tokens_spatial_shape = [s // p for s, p in zip(self.img_size, self.patch_stride)]
        num_tokens = math.prod(self.tokens_spatial_shape)
        self.q_stride = (int(q_stride[0]), int(q_stride[1]))
        self.q_pool = q_pool
        self.unroll_schedule: list[tuple[int, int]] = [self.q_stride] * len(stages[:-1])
        self.mask_unit_size = tuple(mask_unit_size)
        flat_q_stride = math.prod(self.q_stride)
        flat_mu_size = math.prod(self.mask_unit_size)

        if abs_win_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *global_pos_size))
            self.pos_embed_win: Optional[nn.Parameter] = nn.Parameter(torch.zeros(1, embed_dim, *mask_unit_size))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
            self.pos_embed_win = None
        self.patch_embed = _ConvPatchEmbed(in_chans, embed_dim, patch_kernel, patch_stride, patch_padding)

        self.stage_ends, pool_blocks = stage_layout(stages, q_pool)
        depth = sum(stages)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        blocks: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        cur_stage, dim = 0, embed_dim
        for i in range(depth):
            dim_out = dim
            use_mu = mask_unit_attn[cur_stage]  # a transition block still attends in the previous stage's units
            if (i - 1) in self.stage_ends:
                dim_out = int(dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                cur_stage += 1
                if i in pool_blocks:
                    flat_mu_size //= flat_q_stride
            blocks.append(HieraBlock(dim, dim_out, num_heads, mlp_ratio, rates[i],
                                     q_stride=flat_q_stride if i in pool_blocks else 1, window_size=flat_mu_size,
                                     use_mask_unit_attn=use_mu, init_values=init_values,
                                     use_expand_proj=use_expand_proj))
            dim = dim_out
            if i in self.stage_ends:
                reduction = self.patch_stride[0] * 2 ** min(cur_stage, q_pool)
                self.feature_info.append(dict(num_chs=dim, reduction=reduction, module=f"blocks.{i}"))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = dim
        self.head = NormPoolHead(dim, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.pos_embed_win is not None:
            nn.init.trunc_normal_(self.pos_embed_win, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[1, N, C]`` position embedding for a ``grid`` of tokens."""
        if self.pos_embed_win is not None:
            pos = abs_win_pos_embed(self.pos_embed, self.pos_embed_win, grid, antialias=True)
            return pos.flatten(2).transpose(1, 2)
        return self.pos_embed

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.patch_embed(x)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2) + self._pos_embed(grid)
        return unroll(x, grid, self.unroll_schedule), None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    # --- FeatureMixin hooks: the trunk is the blocks; levels are the stage ends, rerolled -------
    _stem_level = False
    _output_fmts = ("NCHW", "NHWC")

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _level_positions(self) -> list[int]:
        return [e for e in self.stage_ends if e < len(self.blocks)]

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_module(stage, x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]

    def _prune_head(self) -> None:
        self.head.norm = nn.Identity()
        self.reset_classifier(0, "")

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        h0, w0 = in_size[0] // self.patch_stride[0], in_size[1] // self.patch_stride[1]
        pools = 0  # how many 2x2 poolings this level has seen: the token count tells
        while pools < self.q_pool and x.shape[1] < h0 * w0:
            h0, w0 = h0 // self.q_stride[0], w0 // self.q_stride[1]
            pools += 1
        x = reroll(x, (h0, w0), self.unroll_schedule[pools:])
        return convert_fmt(x, "NHWC", output_fmt)

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample a flat ``pos_embed`` for another image size; the original checkpoints' head
        (``head.projection``) becomes ``head.fc``; the MAE decoder is dropped."""
        state_dict = state_dict.get("model_state", state_dict)
        own = model.state_dict()
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k.startswith(("decoder", "encoder_norm", "mask_token", "multi_scale_fusion_heads")):
                continue
            k = k.replace("head.projection.", "head.fc.")
            if k == "pos_embed" and v.ndim == 3 and k in own and v.shape != own[k].shape:
                grid = model.tokens_spatial_shape
                v = resample_abs_pos_embed(v, new_size=grid, num_prefix_tokens=0)
            out[k] = v
        return out


# --- variants ----------------------------------------------------------------------------------
_BASE = Variant(Hiera, embed_dim=96, num_heads=1, stages=(2, 3, 16, 3))
_ABSWIN = dict(abs_win_pos_embed=True, init_values=1e-5, img_size=256)

VARIANTS: dict[str, Variant] = {
    "hiera_tiny_224": _BASE.but(stages=(1, 2, 7, 2)),
    "hiera_small_224": _BASE.but(stages=(1, 2, 11, 2)),
    "hiera_base_224": _BASE,
    "hiera_base_plus_224": _BASE.but(embed_dim=112, num_heads=2),
    "hiera_large_224": _BASE.but(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4)),
    "hiera_huge_224": _BASE.but(embed_dim=256, num_heads=4, stages=(2, 6, 36, 4)),
    "hiera_small_abswin_256": _BASE.but(stages=(1, 2, 11, 2), global_pos_size=(16, 16), use_expand_proj=False,
                                        **_ABSWIN),
    "hiera_base_abswin_256": _BASE.but(**_ABSWIN),
}

register_family("hiera", VARIANTS)
