"""Hiera-Det: the Hiera image encoder of SAM 2 (Ravi et al., 2024, "SAM 2: Segment Anything in
Images and Videos"), as a backbone.

Hiera (:mod:`.hiera`) without unrolling: tokens stay an NHWC grid, attention runs in per-stage
windows (zero-padded to whole windows) or globally in a few ``global_att_blocks``, and a stage
transition max-pools 2x2 both the projected shortcut and the queries (keys/values keep the full
window). The position embedding is a small global embedding resized to the grid plus a tiled
window embedding. Feature maps are NCHW at strides 4-32 (what SAM 2's FPN neck consumes);
``forward_features`` returns the NHWC map.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.hiera_utils import NormPoolHead, abs_win_pos_embed
from ..layers.window_attention import window_partition, window_reverse
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family
from .hiera import Hiera, _ConvPatchEmbed, add_block_tail, stage_layout

__all__ = ["HieraDet", "MultiScaleBlock", "VARIANTS"]


def _pool2x2(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Max-pool an NHWC map by ``stride``."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention over an NHWC window (or the whole map); queries optionally max-pooled."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int = 1) -> None:
        super().__init__()
        self.dim_out, self.num_heads, self.q_stride = dim_out, num_heads, q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).unbind(2)
        if self.q_stride > 1:
            q = _pool2x2(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1], q.shape[2]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, h, w, self.dim_out))


class MultiScaleBlock(nn.Module):
    """Pre-norm block on NHWC maps: (windowed) attention, MLP; a transition block projects and
    pools the shortcut and pools the queries (the window shrinks by the same stride)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0, q_stride: int = 1,
                 window_size: int = 0, drop_path: float = 0.0, init_values: Optional[float] = None) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.q_stride, self.window_size = q_stride, window_size
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else nn.Identity()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        add_block_tail(self, dim_out, mlp_ratio, drop_path, init_values)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        ws = self.window_size
        if ws == 0:
            return self.attn(x)
        _, h, w, c = x.shape
        ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        x = self.attn(window_partition(x, (ws, ws)))
        s = self.q_stride
        out_ws = ws // s
        return window_reverse(x, (out_ws, out_ws), hp // s, wp // s)[:, :h // s, :w // s, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        if self.dim != self.dim_out:
            x = self.proj(x_norm)
            if self.q_stride > 1:
                x = _pool2x2(x, self.q_stride)
        x = x + self.drop_path1(self.ls1(self._attn(x_norm)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class HieraDet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """SAM 2 Hiera backbone; NHWC ``forward_features``, NCHW feature maps by default."""

    feature_cfg = {"feature_cls": "getter", "output_fmt": "NCHW"}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        q_pool: int = 3,
        q_stride: int = 2,
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        global_pos_size: Sequence[int] = (7, 7),
        mlp_ratio: float = 4.0,
        init_values: Optional[float] = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.output_fmt = "NHWC"
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *global_pos_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.patch_embed = _ConvPatchEmbed(in_chans, embed_dim, (7, 7), (4, 4), (3, 3))
        self.stage_ends, pool_blocks = stage_layout(stages, q_pool)
        depth = sum(stages)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        blocks: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        cur_stage, dim = 0, embed_dim
        for i in range(depth):
            dim_out = dim
            window = 0 if i in global_att_blocks else window_spec[cur_stage]  # a transition keeps the old window
            if (i - 1) in self.stage_ends:
                dim_out = int(dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                cur_stage += 1
            blocks.append(MultiScaleBlock(dim, dim_out, num_heads, mlp_ratio, q_stride if i in pool_blocks else 1,
                                          window, rates[i], init_values))
            dim = dim_out
            if i in self.stage_ends:
                self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** min(cur_stage, q_pool),
                                              module=f"blocks.{i}"))
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = dim
        self.head = NormPoolHead(dim, num_classes, pool_type=global_pool, drop_rate=drop_rate, pool_dims=(1, 2))
        for p in (self.pos_embed, self.pos_embed_window):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = self.patch_embed(x)
        x = x + abs_win_pos_embed(self.pos_embed, self.pos_embed_window, (x.shape[-2], x.shape[-1]))
        return x.permute(0, 2, 3, 1), None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    # --- FeatureMixin hooks: the trunk is the blocks, the levels are the stage ends -------------
    _stem_level = False
    _native_fmt = "NHWC"
    _output_fmts = ("NCHW", "NHWC")
    _feature_stages = Hiera._feature_stages
    _level_positions = Hiera._level_positions
    _run_stage = Hiera._run_stage
    _prune_to = Hiera._prune_to
    _prune_head = Hiera._prune_head

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """SAM 2 checkpoints: keep the image encoder's trunk (``image_encoder.trunk.*``) only."""
        state_dict = state_dict.get("model", state_dict)
        prefix = "image_encoder.trunk."
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        return state_dict


# --- variants ----------------------------------------------------------------------------------
_T = Variant(HieraDet, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9), num_classes=0)
_S = _T.but(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13))

VARIANTS: dict[str, Variant] = {
    "sam2_hiera_tiny": _T,
    "sam2_hiera_small": _S,
    "sam2_hiera_base_plus": _T.but(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
                                   global_pos_size=(14, 14)),
    "sam2_hiera_large": _T.but(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                               window_spec=(8, 4, 16, 8)),
    "hieradet_small": _S.but(num_classes=1000, window_spec=(8, 4, 16, 8), init_values=1e-5),
}

register_family("hieradet_sam2", VARIANTS)
