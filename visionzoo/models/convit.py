"""ConViT: improving vision transformers with soft convolutional inductive biases.

Paper: d'Ascoli et al., 2021, "ConViT: Improving Vision Transformers with Soft Convolutional
Inductive Biases", https://arxiv.org/abs/2103.10697

The first ``local_up_to_layer`` blocks use gated positional self-attention (GPSA): each head
mixes a content attention ``softmax(q k^T / sqrt(d))`` with a positional attention
``softmax(pos_proj(r_ij))`` over relative offsets ``r_ij = (dx, dy, dx^2 + dy^2)``, weighted by
``sigmoid(gating_param)`` per head. At init the positional part is set up so each head attends to
one neighbour of a ``sqrt(heads) x sqrt(heads)`` kernel (a convolution), and the gate favours it;
training can then escape locality. The class token joins after the GPSA blocks, for the last
(ordinary multi-head self-attention) blocks. Head and checkpoint layout are CaiT's.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.grad_checkpoint import checkpoint_module
from .base import Variant, register_family
from .cait import Cait
from .vision_transformer import Block

__all__ = ["ConVit", "GPSA", "relative_position_indices", "VARIANTS"]


def relative_position_indices(gh: int, gw: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[1, N, N, 3]`` table of ``(dx, dy, dx^2 + dy^2)`` from token ``i`` to token ``j`` of a
    row-major ``gh x gw`` grid (``dx``: column offset, ``dy``: row offset)."""
    rows = torch.arange(gh, device=device).repeat_interleave(gw)
    cols = torch.arange(gw, device=device).repeat(gh)
    dx = (cols[None, :] - cols[:, None]).float()
    dy = (rows[None, :] - rows[:, None]).float()
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1).unsqueeze(0)


class GPSA(nn.Module):
    """Gated positional self-attention on a square-or-rectangular grid of patch tokens (no prefix).

    ``attn = (1 - g) * softmax(q k^T * scale) + g * softmax(pos_proj(r))``, ``g = sigmoid(gating_param)``
    per head, renormalised to sum to one.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, locality_strength: float = 1.0, grid_size: Sequence[int] = (14, 14)) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.locality_strength = locality_strength
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.register_buffer("rel_indices", relative_position_indices(*self.grid_size), persistent=False)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        self.rel_indices = relative_position_indices(self.grid_size[0], self.grid_size[1], device=self.qk.weight.device)

    @torch.no_grad()
    def local_init(self) -> None:
        """Locality init: ``v`` is the identity and head ``(h1, h2)`` of a ``k x k`` kernel
        (``k = sqrt(heads)``) attends around offset ``(h1 - c, h2 - c)``, sharper with
        ``locality_strength``; the gate starts at ``sigmoid(1)``."""
        self.v.weight.copy_(torch.eye(self.v.weight.shape[0], device=self.v.weight.device))
        k = int(self.num_heads ** 0.5)
        center = (k - 1) / 2
        w = torch.zeros_like(self.pos_proj.weight)
        for h1 in range(k):
            for h2 in range(k):
                pos = h1 + k * h2
                w[pos, 2] = -1.0
                w[pos, 1] = 2 * (h1 - center)
                w[pos, 0] = 2 * (h2 - center)
        self.pos_proj.weight.copy_(w * self.locality_strength)
        nn.init.ones_(self.gating_param)

    def positional_attention(self, n: int) -> torch.Tensor:
        """``[1, heads, N, N]`` positional attention (depends only on token positions)."""
        rel = self.rel_indices
        if rel.shape[1] != n:  # another square grid than the one built for
            side = int(math.sqrt(n))
            rel = relative_position_indices(side, side, device=rel.device)
        return self.pos_proj(rel.to(self.pos_proj.weight.dtype)).permute(0, 3, 1, 2).softmax(dim=-1)

    def get_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k = self.qk(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        patch_score = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        pos_score = self.positional_attention(n)
        gate = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        attn = (1.0 - gate) * patch_score + gate * pos_score
        return attn / attn.sum(dim=-1, keepdim=True)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = x.shape
        attn = self.attn_drop(self.get_attention(x))
        v = self.v(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class ConVit(Cait):
    """ConViT: ``local_up_to_layer`` GPSA blocks over patch tokens, then the class token joins for
    the remaining ordinary self-attention blocks; final norm and a head on the class token
    (``'token'``) or the patch-token mean (``'avg'``).

    Built on :class:`~visionzoo.models.cait.Cait` (same embedding, learned position embedding of the
    patch tokens, head, checkpoint filter) with no CaiT blocks: the trunk is ConViT's.
    """

    def __init__(self, *, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "token", embed_dim: int = 48, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = False, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, local_up_to_layer: int = 10, locality_strength: float = 1.0) -> None:
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                         global_pool=global_pool, embed_dim=embed_dim, depth=0, num_heads=num_heads,
                         drop_rate=drop_rate, pos_drop_rate=pos_drop_rate, depth_token_only=0)
        self.local_up_to_layer = local_up_to_layer
        grid = self.patch_embed.grid_size
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        blocks = []
        for i in range(depth):
            blk = Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                        attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=partial(nn.LayerNorm, eps=1e-6))
            if i < local_up_to_layer:  # same slot, so the state_dict order is unchanged
                blk.attn = GPSA(embed_dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop_rate,
                                proj_drop=proj_drop_rate, locality_strength=locality_strength, grid_size=grid)
            blocks.append(blk)
        self.blocks = nn.Sequential(*blocks)
        r = self.patch_embed.feat_ratio()[0]
        self.feature_info = [dict(num_chs=embed_dim, reduction=r, module=f"blocks.{i}") for i in range(depth)]
        self.default_out_indices = tuple(range(max(depth - 3, 0), depth))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """CaiT's init (truncated normal), then GPSA's locality init."""
        super().init_weights()
        for m in self.modules():
            if isinstance(m, GPSA):
                m.local_init()

    def init_non_persistent_buffers(self) -> None:
        for m in self.modules():
            if isinstance(m, GPSA):
                m.init_non_persistent_buffers()

    def _join_cls(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Prepend the class token before block ``local_up_to_layer``."""
        cls_token = self.cls_token
        if index == self.local_up_to_layer and cls_token is not None:
            x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return super()._run_stage(index, stage, self._join_cls(index, x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        # written out rather than through ``_run_stage``: TorchScript has no module-typed parameters
        for i, blk in enumerate(self.blocks):
            x = self._join_cls(i, x)
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint_module(blk, x)
            else:
                x = blk(x)
        return self.norm(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        gh, gw = self.patch_embed.dynamic_feat_size(in_size)
        x = x[:, x.shape[1] - gh * gw:]  # the class token is there from ``local_up_to_layer`` on
        return super()._level_output(x, is_last, norm, output_fmt, in_size)

    def _prune_head(self) -> None:
        self.reset_classifier(0, "")


def _cv(heads: int, **kw: Any) -> Variant:
    return Variant(ConVit, num_heads=heads, embed_dim=48 * heads, local_up_to_layer=10, locality_strength=1.0, **kw)


VARIANTS: dict[str, Variant] = {
    "convit_tiny": _cv(4),
    "convit_small": _cv(9),
    "convit_base": _cv(16),
}
register_family("convit", VARIANTS)
