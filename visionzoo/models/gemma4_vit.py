"""Gemma 4 vision encoder as an image backbone.

Model card: Google DeepMind, 2026, "Gemma 4" (vision tower of the Gemma 4 E4B / 31B models).

A ViT on 16 px patches (a bias-free linear projection of ``(C, ph, pw)``-flattened patches of
``2x - 1``) with a factorised learned position table (table 0 indexed by column, table 1 by row,
``[2, 10240, C]``), sandwich-normed blocks (RMSNorm before and after attention and before and
after the MLP), per-head RMS q/k normalisation, 2-D RoPE (the first half of each head turns with
the column, the second with the row, each half in the half-rotated layout), a gated GELU MLP,
and projections that can clip their input and output (``input_min``/``input_max``/
``output_min``/``output_max`` buffers of the smaller tower).
The encoder pools 3x3 patch neighbourhoods into the tokens the language model reads; the larger
tower standardises them with a learned ``std_bias``/``std_scale``.

* ``gemma4_vit_<size>_enc``: the encoder; ``forward`` returns the pooled tokens;
* ``gemma4_vit_<size>``: the encoder under ``encoder.`` with a global average pool; its levels
  keep the reference's names ``blocks.<i>`` (weightless taps), so every features_only wrapper
  finds them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.attention import scaled_dot_product_attention
from ..layers.config import use_fused_attn
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.rope import AxialRope, angles_to_embed, apply_rope, axial_rope_angles
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family
from .qwen3_vit import PooledEncoderModel, _PooledHead

__all__ = ["Gemma4VisionEncoder", "Gemma4Vit", "ClippableLinear", "SplitAxisRope", "apply_split_rope", "VARIANTS"]


def _clamp(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``torch.clamp(x, lo, hi)`` (the upper bound wins where ``lo > hi``) written with selects,
    which the ONNX export keeps intact for 0-d tensor bounds."""
    x = torch.where(x < lo, lo, x)
    return torch.where(x > hi, hi, x)


class ClippableLinear(nn.Module):
    """Bias-free linear whose input and output may be clamped to stored ranges (``clip=True``;
    the ranges are +-inf until a checkpoint sets them)."""

    def __init__(self, in_features: int, out_features: int, clip: bool = False) -> None:
        super().__init__()
        self.clip = clip
        if clip:
            for name, v in (("input_min", -float("inf")), ("input_max", float("inf")),
                            ("output_min", -float("inf")), ("output_max", float("inf"))):
                self.register_buffer(name, torch.tensor(v))
        self.linear = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.clip:
            x = _clamp(x, self.input_min, self.input_max)
            return _clamp(self.linear(x), self.output_min, self.output_max)
        return self.linear(x)


class SplitAxisRope(AxialRope):
    """2-D RoPE whose head channels are split into an x (column) half and a y (row) half, each
    rotated in the half layout within itself (channels ``i`` and ``i + head_dim/4`` of a half
    form a pair); both axes use the same ``head_dim/4`` frequencies.

    The embedding is ``[N, 2 * head_dim]`` laid out as two per-axis ``[sin, cos]`` blocks."""

    def __init__(self, head_dim: int, grid: Optional[Sequence[int]] = None, temperature: float = 100.0) -> None:
        super().__init__(head_dim, grid=grid, temperature=temperature, xy=True, half=True)

    def _compute(self, grid: List[int], device: Optional[torch.device] = None) -> torch.Tensor:
        angles = axial_rope_angles(grid, self.num_bands, self.temperature, xy=True, device=device)
        per_axis = angles.reshape(angles.shape[0], 2, self.num_bands)  # [N, (x, y), bands]
        return angles_to_embed(per_axis, half=True).flatten(1)


def apply_split_rope(x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (``[..., N, d]``) by a :class:`SplitAxisRope` embedding, axis by axis."""
    d = x.shape[-1]
    out = apply_rope(x.unflatten(-1, (2, d // 2)), emb.unflatten(-1, (2, d)), half=True)
    return out.flatten(-2)


class Gemma4Attention(nn.Module):
    """Self-attention with RMS-normed queries/keys (learned scale), RMS-normed values (no scale)
    and 2-D RoPE; the softmax is not rescaled (q/k norms set the logit scale)."""

    def __init__(self, dim: int, num_heads: int, clip: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.fused_attn = use_fused_attn()
        self.q_proj = ClippableLinear(dim, dim, clip)
        self.k_proj = ClippableLinear(dim, dim, clip)
        self.v_proj = ClippableLinear(dim, dim, clip)
        self.o_proj = ClippableLinear(dim, dim, clip)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=eps)
        self.v_norm = nn.RMSNorm(self.head_dim, eps=eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q_norm(self.q_proj(x).reshape(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).reshape(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        v = self.v_norm(self.v_proj(x).reshape(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        if rope is not None:
            q, k = apply_split_rope(q, rope).type_as(v), apply_split_rope(k, rope).type_as(v)
        x = scaled_dot_product_attention(q, k, v, self.fused_attn, scale=1.0)
        return self.o_proj(x.transpose(1, 2).reshape(b, n, c))


class GatedMlp(nn.Module):
    """``down(act(gate(x)) * up(x))`` with clippable projections."""

    def __init__(self, dim: int, hidden: int, act_layer: LayerType = "gelu_tanh", clip: bool = False) -> None:
        super().__init__()
        self.gate_proj = ClippableLinear(dim, hidden, clip)
        self.up_proj = ClippableLinear(dim, hidden, clip)
        self.act = get_act_layer(act_layer)()
        self.down_proj = ClippableLinear(hidden, dim, clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Gemma4Block(nn.Module):
    """``x + norm2(attn(norm1(x)))``, then ``x + norm4(mlp(norm3(x)))`` (RMSNorms)."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, clip: bool = False,
                 act_layer: LayerType = "gelu_tanh", drop_path: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=eps)
        self.attn = Gemma4Attention(dim, num_heads, clip, eps)
        self.norm2 = nn.RMSNorm(dim, eps=eps)
        self.norm3 = nn.RMSNorm(dim, eps=eps)
        self.mlp = GatedMlp(dim, mlp_hidden, act_layer, clip)
        self.norm4 = nn.RMSNorm(dim, eps=eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = x + self.drop_path(self.norm2(self.attn(self.norm1(x), rope)))
        return x + self.drop_path(self.norm4(self.mlp(self.norm3(x))))


class RmsPooledHead(_PooledHead):
    """Pool, then RMS-normalise without a learned scale (Gemma's soft-token norm; no centring)."""

    def __init__(self, dim: int, drop_rate: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__(dim, drop_rate)
        self.norm = nn.RMSNorm(dim, eps=eps, elementwise_affine=False)


class Gemma4PatchEmbed(nn.Module):
    """Linear projection of ``(C, ph, pw)`` patches of ``2x - 1`` pixels, plus the factorised
    position table: row ``r`` of table 0 (columns) and row ``r`` of table 1 (rows) summed."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, max_positions: int = 10240) -> None:
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.position_embedding_table = nn.Parameter(torch.zeros(2, max_positions, embed_dim))
        self.input_proj = nn.Linear(self.patch_size[0] * self.patch_size[1] * in_chans, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        ph, pw = self.patch_size
        gh, gw = x.shape[-2] // ph, x.shape[-1] // pw
        # flattened ``(C, ph, pw)`` per patch, row-major over the grid (a strided conv's layout)
        patches = F.unfold(2.0 * x - 1.0, (ph, pw), stride=(ph, pw)).transpose(1, 2)
        x = self.input_proj(patches)
        t = self.position_embedding_table
        pos = t[0, :gw].unsqueeze(0) + t[1, :gh].unsqueeze(1)  # [gh, gw, C]
        return x + pos.reshape(1, gh * gw, -1).to(x.dtype), (gh, gw)


class Gemma4VisionEncoder(FeatureMixin, nn.Module):
    """The Gemma 4 vision tower (module docstring); ``forward`` returns the 3x3-pooled tokens,
    ``forward_head`` a pooled embedding (``global_pool``) and optional classifier."""
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(self, *, img_size: int | Sequence[int] = 768, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 0, global_pool: str = "avg", embed_dim: int = 768, depth: int = 16,
                 num_heads: int = 12, mlp_hidden: int = 3072, clip: bool = False, standardize: bool = False,
                 pool_kernel: int = 3, rope_temperature: float = 100.0, act_layer: LayerType = "gelu_tanh",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.global_pool = num_classes, global_pool or "avg"
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False
        self.img_size = to_2tuple(img_size)
        self.pool_kernel = pool_kernel
        # fixed statistics from the checkpoint (buffers, not trained)
        self.register_buffer("std_bias", torch.zeros(embed_dim) if standardize else None)
        self.register_buffer("std_scale", torch.ones(embed_dim) if standardize else None)
        self.in_chans = in_chans  # the patch embedding is a linear layer over patch area x channels
        self.patch_embed = Gemma4PatchEmbed(patch_size, in_chans, embed_dim)
        grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.rope = SplitAxisRope(embed_dim // num_heads, grid=grid, temperature=rope_temperature)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.Sequential(*[Gemma4Block(embed_dim, num_heads, mlp_hidden, clip, act_layer, dpr[i])
                                      for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}")
                             for i in range(depth)]
        self.pool_head = RmsPooledHead(embed_dim, drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
        trunc_normal_(self.patch_embed.position_embedding_table, std=0.02)

    def init_non_persistent_buffers(self) -> None:
        self.rope.init_non_persistent_buffers()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool:
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
        x, grid = self.patch_embed(x)
        return x, self.rope.get_embed([grid[0], grid[1]]), grid

    @torch.jit.unused
    def _run_block(self, blk: nn.Module, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_module(blk, x, rope)
        return blk(x, rope)

    def pool_tokens(self, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """``k x k`` average pooling of the patch grid (the LM's image tokens), then the optional
        learned standardisation."""
        b, _, c = x.shape
        k = self.pool_kernel
        x = x.transpose(1, 2).reshape(b, c, grid[0], grid[1])
        x = F.avg_pool2d(x, k, k).flatten(2).transpose(1, 2) * (c ** 0.5)  # LM embedding scale
        if self.std_bias is not None and self.std_scale is not None:
            x = (x - self.std_bias) * self.std_scale
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, rope, grid = self._embed(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            for blk in self.blocks:
                x = self._run_block(blk, x, rope)
        else:
            for blk in self.blocks:
                x = blk(x, rope)
        return self.pool_tokens(x, grid)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool_head(x, self.global_pool)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image tokens ``[B, N/9, C]``; with a classifier (``num_classes > 0``) its logits."""
        x = self.forward_features(x)
        return self.forward_head(x) if self.num_classes > 0 else x

    # ---- features ----------------------------------------------------------------------
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
        self._run_rope = None
        return self.pool_tokens(x, self._run_grid)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: Tuple[int, int]) -> torch.Tensor:
        if output_fmt == "NLC":
            return x
        h, w = self._run_grid
        return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]


class Gemma4Vit(PooledEncoderModel):
    """The encoder under ``encoder.`` with a pooled head over its tokens (average, then an RMS norm
    without scale)."""

    def __init__(self, *, num_classes: int = 0, global_pool: str = "avg", drop_rate: float = 0.0,
                 **encoder_args) -> None:
        super().__init__()
        self.encoder = Gemma4VisionEncoder(**encoder_args)
        self.in_chans = self.encoder.in_chans
        self.num_features = self.head_hidden_size = self.encoder.embed_dim
        # weightless taps: the reference names this model's levels ``blocks.<i>`` (not
        # ``encoder.blocks.<i>``), so every features_only wrapper finds them here
        self.blocks = nn.ModuleList([nn.Identity() for _ in self.encoder.blocks])
        self.feature_info = [dict(f) for f in self.encoder.feature_info]
        self.pool_head = RmsPooledHead(self.num_features, drop_rate)
        self._finish_head(num_classes, global_pool)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.blocks[index](self.encoder._run_stage(index, stage, x))

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.encoder._prune_to(num_stages, prune_norm)
        self.blocks = self.blocks[:num_stages]


_e4b = dict(embed_dim=768, depth=16, num_heads=12, mlp_hidden=3072, clip=True)
_31b = dict(embed_dim=1152, depth=27, num_heads=16, mlp_hidden=4304, standardize=True)
VARIANTS: Dict[str, Variant] = {
    "gemma4_vit_167m": Variant(Gemma4Vit, **_e4b),
    "gemma4_vit_167m_enc": Variant(Gemma4VisionEncoder, **_e4b),
    "gemma4_vit_570m": Variant(Gemma4Vit, **_31b),
    "gemma4_vit_570m_enc": Variant(Gemma4VisionEncoder, **_31b),
}
register_family("gemma4_vit", VARIANTS)
