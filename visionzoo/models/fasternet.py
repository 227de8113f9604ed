"""FasterNet ("Run, Don't Walk: Chasing Higher FLOPS for Faster Neural Networks", Chen et al. 2023).

Each block mixes space with a partial convolution (a 3x3 conv over only the first quarter of the
channels; the rest pass through untouched) followed by a pointwise MLP (1x1 conv -> BN -> act ->
1x1 conv) on a residual branch. Four stages behind a 4x4 patch-embedding stem, 2x2 patch merging
between stages, and a head that pools, widens with a 1x1 conv to 1280 and classifies.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.activations import get_act_layer
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["FasterNet", "PartialConv3"]


class PartialConv3(nn.Module):
    """A 3x3 conv applied to the first ``dim // n_div`` channels only."""

    def __init__(self, dim: int, n_div: int = 4) -> None:
        super().__init__()
        self.dim_conv = dim // n_div
        self.dim_keep = dim - self.dim_conv
        self.partial_conv3 = nn.Conv2d(self.dim_conv, self.dim_conv, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, (self.dim_conv, self.dim_keep), dim=1)
        return torch.cat((self.partial_conv3(a), b), dim=1)


class FasterBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, act_layer, n_div: int = 4, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act_layer(),
                                 nn.Conv2d(hidden, dim, 1, bias=False))
        self.spatial_mixing = PartialConv3(dim, n_div)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.spatial_mixing(x)))


class PatchConvNorm(nn.Module):
    """Non-overlapping ``k x k`` patch conv (no bias) + BatchNorm: stem (``proj``) and merging (``reduction``)."""

    def __init__(self, in_chs: int, out_chs: int, patch: int, conv_name: str) -> None:
        super().__init__()
        self.conv_name = conv_name
        self.add_module(conv_name, nn.Conv2d(in_chs, out_chs, patch, stride=patch, bias=False))
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(getattr(self, self.conv_name)(x))


class FasterNetStage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, downsample: bool, dp_rates, **block_kw) -> None:
        super().__init__()
        self.grad_checkpointing = False
        # registered before the merging layer (checkpoint order) but run after it
        self.blocks = nn.Sequential(*[FasterBlock(dim, drop_path=dp_rates[i], **block_kw) for i in range(depth)])
        self.downsample = PatchConvNorm(in_chs, dim, 2, "reduction") if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class FasterNet(FeatureMixin, ModelForwardMixin, nn.Module):
    """Four FasterNet stages (strides 4..32) and a pool -> 1x1 conv -> act -> linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, embed_dim: int = 96, depths=(1, 2, 8, 2), mlp_ratio: float = 2.0, n_div: int = 4,
                 feature_dim: int = 1280, act_layer="relu", num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        act = get_act_layer(act_layer)
        self.num_classes, self.grad_checkpointing, self.drop_rate = num_classes, False, drop_rate
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.patch_embed = PatchConvNorm(in_chans, embed_dim, 4, "proj")
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            FasterNetStage(dims[max(i - 1, 0)], dims[i], depths[i], i > 0, dpr[i], mlp_ratio=mlp_ratio,
                           act_layer=act, n_div=n_div)
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = dims[-1]
        self.head_hidden_size = feature_dim
        self.global_pool = SelectAdaptivePool2d(global_pool)
        self.conv_head = nn.Conv2d(dims[-1], feature_dim, 1, bias=False)
        self.act = act()
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(feature_dim, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool)
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act(self.conv_head(self.global_pool(x)))
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        x = self.flatten(x)
        if pre_logits:
            return x
        if x.ndim == 4:  # unpooled: classify per position
            return self.classifier(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.classifier(x)

    # FeatureMixin hooks
    def _forward_stem(self, x: torch.Tensor):
        return self.patch_embed(x), None




_t0 = Variant(FasterNet, embed_dim=40, depths=(1, 2, 8, 2), act_layer="gelu")
VARIANTS: dict[str, Variant] = {
    "fasternet_t0": _t0,
    "fasternet_t1": _t0.but(embed_dim=64),
    "fasternet_t2": _t0.but(embed_dim=96, act_layer="relu"),
    "fasternet_s": _t0.but(embed_dim=128, depths=(1, 2, 13, 2), act_layer="relu"),
    "fasternet_m": _t0.but(embed_dim=144, depths=(3, 4, 18, 3), act_layer="relu"),
    "fasternet_l": _t0.but(embed_dim=192, depths=(3, 4, 18, 3), act_layer="relu"),
}
register_family("fasternet", VARIANTS)
