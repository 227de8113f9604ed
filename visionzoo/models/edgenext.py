"""EdgeNeXt ("EdgeNeXt: Efficiently Amalgamated CNN-Transformer Architecture for Mobile Vision
Applications", Maaz et al., ECCV-W 2022, https://arxiv.org/abs/2206.10589).

A ConvNeXt-like four-stage net (patchify stem, ``LN -> 2x2 conv`` downsampling, depthwise-conv
encoders with kernels growing 3/5/7/9 per stage) whose last block in stages 2-4 is a split
depth-wise transpose attention (SDTA) encoder: the channels are split into groups, each group
after the first adds the previous group's output before its 3x3 depthwise conv (Res2Net-style
multi-scale features), then cross-covariance (channel) attention (XCiT's XCA) mixes the tokens
globally at a cost linear in their number; stage 2's SDTA adds a Fourier positional encoding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.mlp import Mlp
from ..layers.norm import LayerNorm, LayerNorm2d
from ..layers.pool import NormMlpClassifierHead
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family
from .xcit import XCA, PositionalEncodingFourier

__all__ = ["EdgeNeXt", "ConvEncoder", "SplitTransposeBlock", "VARIANTS"]


class ConvEncoder(nn.Module):
    """``x + gamma * mlp(LN(dwconv_k(x)))`` with a channels-last inverted-bottleneck MLP. A
    downsampling encoder (``in_chs`` given: stride 2, channel multiplier) adds to the conv's output."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0, conv_bias: bool = True,
                 ls_init_value: float = 1e-6, drop_path: float = 0.0, in_chs: int | None = None) -> None:
        super().__init__()
        self.shortcut_after_dw = in_chs is not None
        in_chs = in_chs or dim
        self.gamma = nn.Parameter(torch.full((dim,), ls_init_value))
        self.conv_dw = nn.Conv2d(in_chs, dim, kernel_size, stride=2 if self.shortcut_after_dw else 1,
                                 padding=kernel_size // 2, groups=in_chs, bias=conv_bias)
        self.norm = LayerNorm(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x)
        if self.shortcut_after_dw:
            x = y
        y = self.mlp(self.norm(y.permute(0, 2, 3, 1))) * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class SplitTransposeBlock(nn.Module):
    """SDTA encoder: multi-scale split depthwise convs, [+ positional encoding], ``+ gamma_xca *
    XCA(LN(x))`` on tokens, then ``gamma * mlp(LN(x))``, all added to the block input."""

    def __init__(self, dim: int, num_scales: int = 2, num_heads: int = 8, mlp_ratio: float = 4.0,
                 use_pos_emb: bool = False, conv_bias: bool = True, ls_init_value: float = 1e-6,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        width = -(-dim // num_scales)  # torch.chunk's group width
        self.gamma_xca = nn.Parameter(torch.full((dim,), ls_init_value))
        self.gamma = nn.Parameter(torch.full((dim,), ls_init_value))
        self.convs = nn.ModuleList([nn.Conv2d(width, width, 3, padding=1, groups=width, bias=conv_bias)
                                    for _ in range(max(num_scales - 1, 1))])
        self.pos_embd = PositionalEncodingFourier(dim=dim) if use_pos_emb else None
        self.norm_xca = LayerNorm(dim)
        self.xca = XCA(dim, num_heads=num_heads, qkv_bias=True)
        self.norm = LayerNorm(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        splits = x.chunk(len(self.convs) + 1, dim=1)
        outs = []
        sp = splits[0]
        for i, conv in enumerate(self.convs):
            sp = conv(sp if i == 0 else sp + splits[i])
            outs.append(sp)
        outs.append(splits[-1])
        x = torch.cat(outs, 1)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, N, C]
        if self.pos_embd is not None:
            x = x + self.pos_embd(b, h, w).flatten(2).transpose(1, 2)
        x = x + self.drop_path(self.gamma_xca * self.xca(self.norm_xca(x)))
        x = self.gamma * self.mlp(self.norm(x))
        return shortcut + self.drop_path(x.transpose(1, 2).reshape(b, c, h, w))


class EdgeNeXtStage(nn.Module):
    """``LN -> 2x2 stride-2 conv`` (not in stage 1; or ``downsample_block``: the first conv encoder
    strides), conv encoders, then ``num_global`` SDTA blocks."""

    def __init__(self, in_chs: int, dim: int, depth: int, num_global: int, downsample: bool, kernel_size: int,
                 num_scales: int, num_heads: int, use_pos_emb: bool, conv_bias: bool, mlp_ratio: float,
                 dp_rates: Sequence[float], downsample_block: bool = False) -> None:
        super().__init__()
        self.grad_checkpointing = False
        in_block = downsample and downsample_block
        if downsample and not downsample_block:
            self.downsample = nn.Sequential(LayerNorm2d(in_chs), nn.Conv2d(in_chs, dim, 2, stride=2, bias=conv_bias))
        else:
            self.downsample = nn.Identity()
        n_conv = depth - num_global
        self.blocks = nn.Sequential(*[
            ConvEncoder(dim, kernel_size, mlp_ratio, conv_bias, drop_path=dp_rates[i],
                        in_chs=in_chs if in_block and i == 0 else None) if i < n_conv else
            SplitTransposeBlock(dim, num_scales, num_heads, mlp_ratio, use_pos_emb, conv_bias, drop_path=dp_rates[i])
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class EdgeNeXt(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Stride-4 stem (4x4 patchify, or a 9x9 overlapping conv), four stages (strides 4..32),
    pool -> LayerNorm -> linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, depths: Sequence[int] = (3, 3, 9, 3), dims: Sequence[int] = (24, 48, 88, 168),
                 global_block_counts: Sequence[int] = (0, 1, 1, 1), kernel_sizes: Sequence[int] = (3, 5, 7, 9),
                 heads: int = 8, d2_scales: Sequence[int] = (2, 2, 3, 4),
                 use_pos_emb: Sequence[bool] = (False, True, False, False), mlp_ratio: float = 4.0,
                 conv_bias: bool = True, stem_type: str = "patch", downsample_block: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        if stem_type == "patch":
            conv = nn.Conv2d(in_chans, dims[0], 4, stride=4, bias=conv_bias)
        else:  # overlapping 9x9 stride-4 conv
            conv = nn.Conv2d(in_chans, dims[0], 9, stride=4, padding=9 // 2, bias=conv_bias)
        self.stem = nn.Sequential(conv, LayerNorm2d(dims[0]))
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            EdgeNeXtStage(dims[max(i - 1, 0)], dims[i], depths[i], global_block_counts[i], i > 0, kernel_sizes[i],
                          d2_scales[i], heads, use_pos_emb[i], conv_bias, mlp_ratio, dpr[i], downsample_block)
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = NormMlpClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)


_small = Variant(EdgeNeXt, dims=(48, 96, 160, 304))
VARIANTS: dict[str, Variant] = {
    "edgenext_xx_small": Variant(EdgeNeXt, depths=(2, 2, 6, 2), dims=(24, 48, 88, 168), heads=4),
    "edgenext_x_small": Variant(EdgeNeXt, dims=(32, 64, 100, 192), heads=4),
    "edgenext_small": _small,
    "edgenext_base": _small.but(dims=(80, 160, 288, 584)),
    "edgenext_small_rw": _small.but(dims=(48, 96, 192, 384), conv_bias=False, stem_type="overlap",
                                     downsample_block=True),
}
register_family("edgenext", VARIANTS)
