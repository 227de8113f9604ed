"""All-MLP vision models: MLP-Mixer, ResMLP and gMLP.

Papers:
    * MLP-Mixer: Tolstikhin et al., 2021, "MLP-Mixer: An all-MLP Architecture for Vision",
      https://arxiv.org/abs/2105.01601
    * ResMLP: Touvron et al., 2021, "ResMLP: Feedforward networks for image classification with
      data-efficient training", https://arxiv.org/abs/2105.03404
    * gMLP: Liu et al., 2021, "Pay Attention to MLPs", https://arxiv.org/abs/2105.08050

Each model embeds non-overlapping patches into tokens and alternates *token mixing* (an MLP or
linear map across the token axis, the same for every channel) with *channel mixing* (an MLP per
token). The block type selects the family: :class:`MixerBlock` (two MLPs, pre-LayerNorm; with
GLU MLPs this is the "gMixer"), :class:`ResBlock` (ResMLP: affine norms, a linear token map,
layer scale) or :class:`SpatialGatingBlock` (gMLP: one MLP whose hidden half is gated by a
token-mixed other half). The head averages the tokens.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.mlp import GluMlp, Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family

__all__ = ["MlpMixer", "MixerBlock", "ResBlock", "SpatialGatingBlock", "Affine", "SpatialGatingUnit", "VARIANTS"]


def _drop_path(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class MixerBlock(nn.Module):
    """``x + mlp_tokens(norm1(x)^T)^T``, then ``x + mlp_channels(norm2(x))``."""

    def __init__(self, dim: int, seq_len: int, mlp_ratio: float | Sequence[float] = (0.5, 4.0),
                 mlp_layer: Callable[..., nn.Module] = Mlp, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 act_layer: LayerType = "gelu", drop: float = 0.0, drop_path: float = 0.0,
                 init_values: Optional[float] = None) -> None:
        super().__init__()
        tokens_ratio, channels_ratio = to_2tuple(mlp_ratio)
        self.norm1 = norm_layer(dim)
        self.mlp_tokens = mlp_layer(seq_len, int(tokens_ratio * dim), act_layer=act_layer, drop=drop)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp_channels = mlp_layer(dim, int(channels_ratio * dim), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class Affine(nn.Module):
    """ResMLP's per-channel affine "norm" ``alpha * x + beta`` (no statistics)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class ResBlock(nn.Module):
    """ResMLP block: ``x + ls1 * linear_tokens(norm1(x)^T)^T``, then ``x + ls2 * mlp(norm2(x))``."""

    def __init__(self, dim: int, seq_len: int, mlp_ratio: float | Sequence[float] = 4.0,
                 mlp_layer: Callable[..., nn.Module] = Mlp, norm_layer: Callable[[int], nn.Module] = Affine,
                 act_layer: LayerType = "gelu", drop: float = 0.0, drop_path: float = 0.0,
                 init_values: Optional[float] = 1e-4) -> None:
        super().__init__()
        channels_ratio = to_2tuple(mlp_ratio)[1] if isinstance(mlp_ratio, (tuple, list)) else mlp_ratio
        init = 1e-4 if init_values is None else init_values
        self.ls1 = nn.Parameter(torch.full((dim,), float(init)))
        self.ls2 = nn.Parameter(torch.full((dim,), float(init)))
        self.norm1 = norm_layer(dim)
        self.linear_tokens = nn.Linear(seq_len, seq_len)
        self.drop_path = _drop_path(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp_channels = mlp_layer(dim, int(channels_ratio * dim), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1 * self.linear_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        return x + self.drop_path(self.ls2 * self.mlp_channels(self.norm2(x)))


class SpatialGatingUnit(nn.Module):
    """gMLP's gate: split the hidden channels into ``u, v``; ``u * proj(norm(v)^T)^T`` where
    ``proj`` mixes tokens (initialised near zero weight and unit bias, so it starts as identity
    gating)."""

    def __init__(self, dim: int, seq_len: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm_layer(dim // 2)
        self.proj = nn.Linear(seq_len, seq_len)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.proj.weight, std=1e-6)
        nn.init.ones_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = x.chunk(2, dim=-1)
        v = self.proj(self.norm(v).transpose(-1, -2)).transpose(-1, -2)
        return u * v


class GatedMlp(nn.Module):
    """``fc1 -> act -> drop -> gate -> fc2 -> drop`` with a :class:`SpatialGatingUnit` gate."""

    def __init__(self, dim: int, hidden: int, seq_len: int, act_layer: LayerType = "gelu",
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = get_act_layer(act_layer)()
        self.drop1 = nn.Dropout(drop)
        self.gate = SpatialGatingUnit(hidden, seq_len, norm_layer)
        self.fc2 = nn.Linear(hidden // 2, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.drop1(self.act(self.fc1(x))))
        return self.drop2(self.fc2(x))


class SpatialGatingBlock(nn.Module):
    """gMLP block: ``x + gated_mlp(norm(x))``."""

    def __init__(self, dim: int, seq_len: int, mlp_ratio: float | Sequence[float] = 4.0,
                 mlp_layer: Callable[..., nn.Module] = Mlp, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 act_layer: LayerType = "gelu", drop: float = 0.0, drop_path: float = 0.0,
                 init_values: Optional[float] = None) -> None:
        super().__init__()
        ratio = to_2tuple(mlp_ratio)[1] if isinstance(mlp_ratio, (tuple, list)) else mlp_ratio
        self.norm = norm_layer(dim)
        self.mlp_channels = GatedMlp(dim, int(ratio * dim), seq_len, act_layer=act_layer, norm_layer=norm_layer,
                                     drop=drop)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp_channels(self.norm(x)))


_BLOCKS = {"mixer": MixerBlock, "res": ResBlock, "spatial_gating": SpatialGatingBlock}
_MLPS = {"mlp": Mlp, "glu": GluMlp}
_NORMS: dict[str, Callable[[int], nn.Module]] = {"layernorm": partial(nn.LayerNorm, eps=1e-6), "affine": Affine}


class MlpMixer(FeatureMixin, nn.Module):
    """Patch embedding (``stem``), ``num_blocks`` mixing blocks, norm, token average, linear head.

    Args (beyond the common ones):
        patch_size, embed_dim, num_blocks: patch size, token width, depth.
        block: ``'mixer'``, ``'res'`` (ResMLP) or ``'spatial_gating'`` (gMLP).
        mlp_ratio: (token, channel) MLP expansion (a float: the channel one).
        mlp_layer: ``'mlp'`` or ``'glu'`` (gated, gate last); act_layer: its activation.
        norm_layer: ``'layernorm'`` (eps 1e-6) or ``'affine'`` (ResMLP).
        init_values: ResMLP layer-scale init. stem_norm: norm inside the patch embedding.
        global_pool: ``'avg'`` or ``''``.
    """

    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")

    def __init__(self, *, num_classes: int = 1000, img_size: int | Sequence[int] = 224, in_chans: int = 3,
                 patch_size: int = 16, num_blocks: int = 8, embed_dim: int = 512, block: str = "mixer",
                 mlp_ratio: float | Sequence[float] = (0.5, 4.0), mlp_layer: str = "mlp",
                 act_layer: LayerType = "gelu", norm_layer: str = "layernorm", init_values: Optional[float] = None,
                 stem_norm: bool = False, global_pool: str = "avg", drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        norm = _NORMS[norm_layer] if isinstance(norm_layer, str) else norm_layer
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 0
        self.grad_checkpointing = False
        self.stem = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                               norm_layer=norm if stem_norm else None)
        seq_len = self.stem.num_patches
        assert seq_len is not None
        block_cls = _BLOCKS[block]
        mlp_cls = _MLPS[mlp_layer]
        dpr = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.blocks = nn.Sequential(*[
            block_cls(embed_dim, seq_len, mlp_ratio, mlp_layer=mlp_cls, norm_layer=norm, act_layer=act_layer,
                      drop=proj_drop_rate, drop_path=dpr[i], init_values=init_values)
            for i in range(num_blocks)])
        reduction = self.stem.patch_size[0]
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f"blocks.{i}")
                             for i in range(num_blocks)]
        self.default_out_indices = tuple(range(max(num_blocks - 3, 0), num_blocks))
        self.norm = norm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal linears with zero bias (the gMLP gate keeps its identity init)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, SpatialGatingUnit):
                m.reset_parameters()
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)

    # ---- classifier -----------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    # ---- FeatureMixin hooks ---------------------------------------------------------------------

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x)
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if norm:
            x = self.norm(x)
        if output_fmt == "NLC":
            return x
        h, w = self.stem.dynamic_feat_size(in_size)
        return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()

    # ---- forward --------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            for blk in self.blocks:
                x = checkpoint_module(blk, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _mixer(patch: int, depth: int, dim: int, **kw: Any) -> Variant:
    return Variant(MlpMixer, patch_size=patch, num_blocks=depth, embed_dim=dim, **kw)


_GMIXER = dict(mlp_ratio=(1.0, 4.0), mlp_layer="glu", act_layer="silu")
_RESMLP = dict(block="res", mlp_ratio=4.0, norm_layer="affine")
_GMLP = dict(block="spatial_gating", mlp_ratio=6.0)

VARIANTS: dict[str, Variant] = {
    "mixer_s32_224": _mixer(32, 8, 512),
    "mixer_s16_224": _mixer(16, 8, 512),
    "mixer_b32_224": _mixer(32, 12, 768),
    "mixer_b16_224": _mixer(16, 12, 768),
    "mixer_l32_224": _mixer(32, 24, 1024),
    "mixer_l16_224": _mixer(16, 24, 1024),
    "gmixer_12_224": _mixer(16, 12, 384, **_GMIXER),
    "gmixer_24_224": _mixer(16, 24, 384, **_GMIXER),
    "resmlp_12_224": _mixer(16, 12, 384, **_RESMLP, init_values=0.1),
    "resmlp_24_224": _mixer(16, 24, 384, **_RESMLP, init_values=1e-5),
    "resmlp_36_224": _mixer(16, 36, 384, **_RESMLP, init_values=1e-6),
    "resmlp_big_24_224": _mixer(8, 24, 768, **_RESMLP, init_values=1e-6),
    "gmlp_ti16_224": _mixer(16, 30, 128, **_GMLP),
    "gmlp_s16_224": _mixer(16, 30, 256, **_GMLP),
    "gmlp_b16_224": _mixer(16, 30, 512, **_GMLP),
}

register_family("mlp_mixer", VARIANTS)
