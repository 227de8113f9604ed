"""FocalNet (Yang et al., 2022, "Focal Modulation Networks").

Self-attention is replaced by *focal modulation*: one 1x1 projection gives a query ``q``, a
context map and ``L + 1`` gates. The context goes through ``L`` stacked depthwise convolutions
(kernels ``focal_window + 2l``), each level seeing a wider neighbourhood than the last, plus a
global-average level. The levels are summed with their per-position gates, mixed by a 1x1 conv
``h`` into a modulator, and the output is ``q * modulator``, so every position interacts with its
surroundings at linear cost. The hierarchy is Swin-like (four stages, 4/8/16/32 reduction), kept
NCHW throughout. The large/huge variants use overlapping conv downsampling, post-norm residual
branches with LayerScale and (huge) a LayerNorm inside the modulation.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import to_ntuple
from ..layers.layer_scale import LayerScale2d
from ..layers.mlp import Mlp
from ..layers.norm import LayerNorm2d
from ..layers.pool import ClassifierHead
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["FocalNet", "FocalModulation", "FocalNetBlock", "VARIANTS"]

_Norm = partial(LayerNorm2d, eps=1e-5)


class FocalModulation(nn.Module):
    """``q * h(sum_l gate_l * ctx_l + gate_L * gelu(mean(ctx_{L-1})))``, then a 1x1 projection.

    ``ctx_l`` = GELU(depthwise conv of ``ctx_{l-1}``) with kernel ``focal_window + focal_factor * l``.
    ``normalize_modulator`` divides the aggregated context by ``L + 1``; ``post_norm`` normalises
    ``q * modulator`` before the projection (FocalNet-H).
    """

    def __init__(self, dim: int, focal_level: int, focal_window: int = 3, focal_factor: int = 2, bias: bool = True,
                 proj_drop: float = 0.0, post_norm: bool = False, normalize_modulator: bool = False,
                 norm_layer: Callable[..., nn.Module] = _Norm) -> None:
        super().__init__()
        self.dim, self.focal_level = dim, focal_level
        self.normalize_modulator = normalize_modulator
        self.f = nn.Conv2d(dim, 2 * dim + focal_level + 1, 1, bias=bias)
        self.h = nn.Conv2d(dim, dim, 1, bias=bias)
        self.act = nn.GELU()
        self.proj = nn.Conv2d(dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)
        self.kernel_sizes = [focal_factor * lvl + focal_window for lvl in range(focal_level)]
        self.focal_layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim, bias=False), nn.GELU())
            for k in self.kernel_sizes])
        self.norm = norm_layer(dim) if post_norm else nn.Identity()

    def modulator(self, ctx: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The gated hierarchical context mixed by ``h`` (``[B, C, H, W]``)."""
        ctx_all = torch.zeros_like(ctx)
        for lvl, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, lvl:lvl + 1]
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        return self.h(ctx_all)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, ctx, gates = torch.split(self.f(x), [self.dim, self.dim, self.focal_level + 1], dim=1)
        x = self.norm(q * self.modulator(ctx, gates))
        return self.proj_drop(self.proj(x))


class FocalNetBlock(nn.Module):
    """Residual focal modulation + MLP (1x1 convs, NCHW); pre-norm, or post-norm + LayerScale."""

    def __init__(self, dim: int, *, focal_level: int, focal_window: int, mlp_ratio: float = 4.0,
                 post_norm: bool = False, post_norm_in_modulation: bool = False, normalize_modulator: bool = False,
                 layerscale_value: float | None = None, proj_drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer: Callable[..., nn.Module] = _Norm) -> None:
        super().__init__()
        pre = nn.Identity if post_norm else norm_layer
        post = norm_layer if post_norm else nn.Identity
        ls = (lambda d: LayerScale2d(d, layerscale_value)) if layerscale_value is not None else (lambda d: nn.Identity())
        self.norm1 = pre(dim)
        self.modulation = FocalModulation(dim, focal_level, focal_window, proj_drop=proj_drop,
                                          post_norm=post_norm_in_modulation, normalize_modulator=normalize_modulator,
                                          norm_layer=norm_layer)
        self.norm1_post = post(dim)
        self.ls1 = ls(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = pre(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, use_conv=True)
        self.norm2_post = post(dim)
        self.ls2 = ls(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.norm1_post(self.modulation(self.norm1(x)))))
        return x + self.drop_path2(self.ls2(self.norm2_post(self.mlp(self.norm2(x)))))


class ConvDown(nn.Module):
    """Strided conv + channel LayerNorm: the stem (stride 4) and the stage downsampling (stride 2).
    ``overlap`` uses a larger padded kernel (7/pad 2 for the stem, 3/pad 1 between stages)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, overlap: bool = False,
                 norm_layer: Callable[..., nn.Module] = _Norm) -> None:
        super().__init__()
        if overlap:
            kernel, padding = (7, 2) if stride == 4 else (3, 1)
        else:
            kernel, padding = stride, 0
        self.proj = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=padding)
        self.norm = norm_layer(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class FocalNetStage(nn.Module):
    """Optional downsampling then ``depth`` focal-modulation blocks."""

    def __init__(self, dim: int, out_dim: int, *, depth: int, downsample: bool, overlap_down: bool = False,
                 drop_path: Sequence[float] = (), **block_kwargs: Any) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = ConvDown(dim, out_dim, 2, overlap_down) if downsample else nn.Identity()
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(*[FocalNetBlock(out_dim, drop_path=rates[i], **block_kwargs)
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class FocalNet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """FocalNet backbone: conv stem, four focal-modulation stages, final LayerNorm, pooled head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        mlp_ratio: float = 4.0,
        focal_levels: int | Sequence[int] = 2,
        focal_windows: int | Sequence[int] = 3,
        use_overlap_down: bool = False,
        use_post_norm: bool = False,
        use_post_norm_in_modulation: bool = False,
        normalize_modulator: bool = False,
        layerscale_value: float | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        n = len(depths)
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        dims = [embed_dim * 2 ** i for i in range(n)]
        levels, windows = to_ntuple(focal_levels, n), to_ntuple(focal_windows, n)
        self.stem = ConvDown(in_chans, embed_dim, 4, use_overlap_down)
        rates = drop_path_rates(drop_path_rate, list(depths))
        self.layers = nn.Sequential(*[
            FocalNetStage(dims[max(i - 1, 0)], dims[i], depth=depths[i], downsample=i > 0,
                          overlap_down=use_overlap_down, drop_path=rates[i], focal_level=levels[i],
                          focal_window=windows[i], mlp_ratio=mlp_ratio, post_norm=use_post_norm,
                          post_norm_in_modulation=use_post_norm_in_modulation,
                          normalize_modulator=normalize_modulator, layerscale_value=layerscale_value,
                          proj_drop=proj_drop_rate)
            for i in range(n)])
        self.feature_info = [dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f"layers.{i}") for i in range(n)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.norm = _Norm(dims[-1])
        self.head = ClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(self.stem(x)))

    # --- FeatureMixin hooks (default stem hook): levels are the stage outputs; ``norm=True`` norms the last
    _stem_level = False
    _norm_is_final = True

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.layers)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.layers = self.layers[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()


# --- variants ----------------------------------------------------------------------------------
_tiny = Variant(FocalNet, embed_dim=96, depths=(2, 2, 6, 2))
_small = _tiny.but(depths=(2, 2, 18, 2))
_large = _small.but(embed_dim=192, focal_levels=3, focal_windows=5, use_overlap_down=True, use_post_norm=True,
                    layerscale_value=1e-4)
_fl4 = dict(focal_levels=4, focal_windows=3)

VARIANTS: dict[str, Variant] = {
    "focalnet_tiny_srf": _tiny,
    "focalnet_small_srf": _small,
    "focalnet_base_srf": _small.but(embed_dim=128),
    "focalnet_tiny_lrf": _tiny.but(focal_levels=3),
    "focalnet_small_lrf": _small.but(focal_levels=3),
    "focalnet_base_lrf": _small.but(embed_dim=128, focal_levels=3),
    "focalnet_large_fl3": _large,
    "focalnet_large_fl4": _large.but(**_fl4),
    "focalnet_xlarge_fl3": _large.but(embed_dim=256),
    "focalnet_xlarge_fl4": _large.but(embed_dim=256, **_fl4),
    "focalnet_huge_fl3": _large.but(embed_dim=352, focal_windows=3, use_post_norm_in_modulation=True),
    "focalnet_huge_fl4": _large.but(embed_dim=352, use_post_norm_in_modulation=True, **_fl4),
}

register_family("focalnet", VARIANTS)
