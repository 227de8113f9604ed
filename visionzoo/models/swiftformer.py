"""SwiftFormer ("SwiftFormer: Efficient Additive Attention for Transformer-based Real-time Mobile
Vision Applications", Shaker et al., ICCV 2023, https://arxiv.org/abs/2303.15446).

A four-stage conv net whose stages end in one SwiftFormer encoder. The encoder replaces the
quadratic query-key product of self-attention by *additive* attention: per-token scores from the
normalised queries and one learned vector ``w_g`` pool the queries into a single global query,
which then modulates every key elementwise (linear in the number of tokens). The rest of each
stage is ConvEncoder blocks (depthwise 3x3 -> BN -> pointwise MLP, layer-scaled residual). Trained
with a distillation head: at inference the two heads are averaged (as in LeViT / DeiT).
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.distill import DistilledHeadsMixin
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .fastvit import LayerScale2d

__all__ = ["SwiftFormer", "EfficientAdditiveAttention"]


class ConvEncoder(nn.Module):
    """``x + gamma * pw2(act(pw1(bn(dw3x3(x)))))``: the conv block, and (with ``hidden == dim``) the
    local-representation step that opens each SwiftFormer encoder."""

    def __init__(self, dim: int, hidden: int, drop_path: float = 0.0, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(hidden, dim, 1)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.drop_path(self.layer_scale(y))


class EfficientAdditiveAttention(nn.Module):
    """Additive attention on ``[B, N, C]`` tokens, O(N): scores ``alpha = normalize_N(q @ w_g / sqrt(C))``
    pool the (L2-normalised) queries into one global query ``g``; output ``final(proj(g * k) + q)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.to_query = nn.Linear(dim, dim)
        self.to_key = nn.Linear(dim, dim)
        self.w_g = nn.Parameter(torch.randn(dim, 1))
        self.proj = nn.Linear(dim, dim)
        self.final = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = F.normalize(self.to_query(x), dim=-1)
        k = F.normalize(self.to_key(x), dim=-1)
        alpha = F.normalize((q @ self.w_g) * self.scale, dim=1)  # [B, N, 1], unit norm over tokens
        g = (alpha * q).sum(dim=1, keepdim=True)  # [B, 1, C] global query
        return self.final(self.proj(g * k) + q)


class ConvMlp(nn.Module):
    """BN -> 1x1 conv -> GELU -> 1x1 conv on NCHW maps (the encoder's feed-forward)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(self.norm1(x))))))


class SwiftFormerEncoder(nn.Module):
    """Local representation, then layer-scaled residual additive attention and conv MLP."""

    def __init__(self, dim: int, hidden: int, drop_path: float = 0.0, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.local_representation = ConvEncoder(dim, dim, 0.0, layer_scale_init)
        self.attn = EfficientAdditiveAttention(dim)
        self.linear = ConvMlp(dim, hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale_1 = LayerScale2d(dim, layer_scale_init)
        self.layer_scale_2 = LayerScale2d(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.local_representation(x)
        b, c, h, w = x.shape
        a = self.attn(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)
        x = x + self.drop_path(self.layer_scale_1(a))
        return x + self.drop_path(self.layer_scale_2(self.linear(x)))


class Downsample(nn.Module):
    """Stride-2 3x3 conv + BN between stages."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class SwiftFormerStage(nn.Module):
    """Optional downsample, ``depth - num_vit`` ConvEncoders, then ``num_vit`` SwiftFormer encoders."""

    def __init__(self, in_chs: int, dim: int, depth: int, downsample: bool, mlp_ratio: float, dp_rates,
                 num_vit: int = 1, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_chs, dim) if downsample else nn.Identity()
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.Sequential(*[
            (SwiftFormerEncoder if i >= depth - num_vit else ConvEncoder)(dim, hidden, dp_rates[i], layer_scale_init)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class SwiftFormer(DistilledHeadsMixin, FeatureMixin, ModelForwardMixin, nn.Module):
    """Two stride-2 conv stem, four stages (strides 4..32), BN, pool and a distilled linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, depths=(3, 3, 6, 4), embed_dims=(48, 56, 112, 220), mlp_ratio: float = 4.0,
                 layer_scale_init: float = 1e-5, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing, self.drop_rate = num_classes, False, drop_rate
        d0 = embed_dims[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, d0 // 2, 3, stride=2, padding=1), nn.BatchNorm2d(d0 // 2), nn.ReLU(),
            nn.Conv2d(d0 // 2, d0, 3, stride=2, padding=1), nn.BatchNorm2d(d0), nn.ReLU())
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            SwiftFormerStage(embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], i > 0, mlp_ratio, dpr[i],
                             layer_scale_init=layer_scale_init)
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.norm = nn.BatchNorm2d(self.num_features)
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self._init_heads(num_classes)

    def _set_global_pool(self, global_pool: str) -> None:
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.dropout(self.global_pool(x), self.drop_rate, self.training)
        if pre_logits:
            return x
        if x.ndim == 4:  # unpooled: classify per position
            x = x.permute(0, 2, 3, 1)
            return ((self.head(x) + self.head_dist(x)) / 2).permute(0, 3, 1, 2)
        return self._distilled_heads(x)

    # FeatureMixin hooks
    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()


_xs = Variant(SwiftFormer, depths=(3, 3, 6, 4), embed_dims=(48, 56, 112, 220))
VARIANTS: dict[str, Variant] = {
    "swiftformer_xs": _xs,
    "swiftformer_s": _xs.but(depths=(3, 3, 9, 6), embed_dims=(48, 64, 168, 224)),
    "swiftformer_l1": _xs.but(depths=(4, 3, 10, 5), embed_dims=(48, 96, 192, 384)),
    "swiftformer_l3": _xs.but(depths=(4, 4, 12, 6), embed_dims=(64, 128, 320, 512)),
}
register_family("swiftformer", VARIANTS)
