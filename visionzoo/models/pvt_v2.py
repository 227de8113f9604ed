"""Pyramid Vision Transformer v2 ("PVT v2: Improved Baselines with Pyramid Vision Transformer",
Wang et al. 2022).

A four-stage transformer pyramid (strides 4/8/16/32). PVTv2 changes PVTv1 in three places:
overlapping patch embeddings (a 7x7/4 conv into the first stage, 3x3/2 convs between stages, each
followed by LayerNorm), spatial-reduction attention whose keys/values come from a strided-conv
(or, in the ``_li`` "linear" models, a 7x7 average-pooled) copy of the map, and a feed-forward
with a 3x3 depthwise conv between its two linear layers (which also removes the need for position
embeddings). Blocks run on channels-last maps; each stage ends with a LayerNorm and hands out an
NCHW map.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.activations import LayerType
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.linear_head import PoolLinearHeadMixin
from ..layers.mlp import _FeedForward
from ..layers.norm import LayerNorm2d
from ..layers.sr_attention import SpatialReductionAttention
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["PyramidVisionTransformerV2", "init_pvt_weights"]


def init_pvt_weights(m: nn.Module) -> None:
    """PVT-family init (PVTv2, Twins): truncated-normal linears, fan-out normal convs, zero biases."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ConvFeedForward(_FeedForward):
    """``fc1 [-> ReLU] -> 3x3 depthwise conv -> GELU -> fc2`` on a channels-last map ``[B, H, W, C]``.

    The depthwise conv gives every token its neighbourhood (PVTv2's position information); the
    linear-SRA models add a ReLU after ``fc1``.
    """

    def __init__(self, dim: int, hidden: int, extra_relu: bool = False, act_layer: LayerType = nn.GELU,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self._add_tail(hidden, dim, act_layer, None, True, (drop, drop), nn.Linear)

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(x))
        return self.act(self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class PvtBlock(nn.Module):
    """Pre-norm residual block: spatial-reduction attention, then the conv feed-forward."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, linear: bool, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias=qkv_bias, linear=linear,
                                              attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvFeedForward(dim, int(dim * mlp_ratio), extra_relu=linear, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: a ``kernel``/``stride`` conv padded by ``kernel // 2`` + LayerNorm (NCHW)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = LayerNorm2d(out_chs, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class PvtStage(nn.Module):
    """[3x3/2 overlapping patch embed] -> blocks (channels-last) -> LayerNorm; NCHW in and out."""

    def __init__(self, in_chs: int, dim: int, depth: int, downsample: bool, dp_rates: list[float], **block_kw) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = OverlapPatchEmbed(in_chs, dim, 3, 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[PvtBlock(dim, drop_path=dp_rates[i], **block_kw) for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x).permute(0, 3, 1, 2).contiguous()


class PyramidVisionTransformerV2(FeatureMixin, PoolLinearHeadMixin, ModelForwardMixin, nn.Module):
    """7x7/4 patch embed, four SRA stages at strides 4..32 (each stage end one feature level),
    global average pool and a linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, depths: tuple[int, ...] = (3, 4, 6, 3), embed_dims: tuple[int, ...] = (64, 128, 320, 512),
                 num_heads: tuple[int, ...] = (1, 2, 5, 8), mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0),
                 sr_ratios: tuple[int, ...] = (8, 4, 2, 1), linear: bool = False, qkv_bias: bool = True,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.patch_embed = OverlapPatchEmbed(in_chans, embed_dims[0], 7, 4)
        dpr = drop_path_rates(drop_path_rate, list(depths))
        stages = []
        for i, depth in enumerate(depths):
            stages.append(PvtStage(embed_dims[max(i - 1, 0)], embed_dims[i], depth, i > 0, dpr[i],
                                   num_heads=num_heads[i], mlp_ratio=mlp_ratios[i], sr_ratio=sr_ratios[i],
                                   linear=linear, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                                   attn_drop=attn_drop_rate))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=d, reduction=4 * 2 ** i, module=f"stages.{i}")
                             for i, d in enumerate(embed_dims)]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self._init_pool_linear_head(num_classes, global_pool, drop_rate)
        self.apply(init_pvt_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))

    # FeatureMixin hooks: the default self.stages trunk, entered through the patch embed
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.patch_embed(x), None


_b2 = Variant(PyramidVisionTransformerV2, depths=(3, 4, 6, 3))
VARIANTS: dict[str, Variant] = {
    "pvt_v2_b0": _b2.but(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256)),
    "pvt_v2_b1": _b2.but(depths=(2, 2, 2, 2)),
    "pvt_v2_b2": _b2,
    "pvt_v2_b2_li": _b2.but(linear=True),
    "pvt_v2_b3": _b2.but(depths=(3, 4, 18, 3)),
    "pvt_v2_b4": _b2.but(depths=(3, 8, 27, 3)),
    "pvt_v2_b5": _b2.but(depths=(3, 6, 40, 3), mlp_ratios=(4.0, 4.0, 4.0, 4.0)),
}
register_family("pvt_v2", VARIANTS)
