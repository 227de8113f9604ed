"""Next-ViT ("Next-ViT: Next Generation Vision Transformer for Efficient Deployment in Realistic
Industrial Scenarios", Li et al. 2022).

A hybrid built for deployment: only BatchNorm, ReLU, convs and plain attention. A four-conv stem
(stride 4) feeds four stages (strides 4..32) that mix two block types:

* Next Convolution Block (NCB): multi-head convolutional attention (MHCA: a grouped 3x3 conv with
  one group per 32-channel "head", BN, ReLU, 1x1 projection) and a conv MLP, both residual.
* Next Transformer Block (NTB): efficient multi-head self-attention (E-MHSA: keys and values from
  a sequence average-pooled by ``sr_ratio ** 2`` + BN) on 3/4 of the output channels, then an
  MHCA branch on a 1x1 projection to the remaining 1/4; the two are concatenated and mixed by a
  conv MLP (the paper's Next Hybrid Strategy: NCBs followed by one NTB in every stage after the first).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.attention import scaled_dot_product_attention
from ..layers.config import use_fused_attn
from ..layers.drop import DropPath, drop_path_rates
from ..layers.final_norm import StagesFinalNormMixin
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import make_divisible
from ..layers.mlp import Mlp
from ..layers.pool import ClassifierHead
from ..layers.weight_init import trunc_normal_
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family
from .efficientvit_mit import ConvLayer

__all__ = ["NextViT"]

_HEAD_DIM = 32


class ConvNormEmbed(nn.Module):
    """Channel (and, with ``stride=2``, spatial) re-embedding: [2x2 average pool] -> 1x1 conv -> BN."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False) if stride == 2 else nn.Identity()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.norm = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(self.pool(x)))


def _embed(in_chs: int, out_chs: int, stride: int) -> nn.Module:
    return ConvNormEmbed(in_chs, out_chs, stride) if stride > 1 or in_chs != out_chs else nn.Identity()


class Mhca(nn.Module):
    """Multi-head convolutional attention: grouped 3x3 conv (32 channels a group) -> BN -> ReLU -> 1x1."""

    def __init__(self, dim: int, head_dim: int = _HEAD_DIM) -> None:
        super().__init__()
        self.group_conv3x3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim // head_dim, bias=False)
        self.norm = nn.BatchNorm2d(dim)
        self.act = nn.ReLU(inplace=True)
        self.projection = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.act(self.norm(self.group_conv3x3(x))))


class EfficientMhsa(nn.Module):
    """E-MHSA on a ``[B, N, C]`` sequence: keys/values from the sequence average-pooled over runs
    of ``sr_ratio ** 2`` consecutive (raster-order) tokens, then BatchNorm."""

    def __init__(self, dim: int, head_dim: int = _HEAD_DIM, sr_ratio: int = 1, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        n_ratio = sr_ratio ** 2
        self.sr: nn.Module = nn.AvgPool1d(n_ratio, stride=n_ratio) if sr_ratio > 1 else nn.Identity()
        self.norm: nn.Module = nn.BatchNorm1d(dim) if sr_ratio > 1 else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self._heads(self.q(x))
        kv = self.norm(self.sr(x.transpose(1, 2))).transpose(1, 2)
        k, v = self._heads(self.k(kv)), self._heads(self.v(kv))
        x = scaled_dot_product_attention(q, k, v, self.fused_attn,
                                         dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class NextConvBlock(nn.Module):
    """NCB: [re-embed] -> ``x + MHCA(x)`` -> ``x + MLP(BN(x))``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_path: float = 0.0, drop: float = 0.0,
                 mlp_ratio: float = 3.0) -> None:
        super().__init__()
        self.patch_embed = _embed(in_chs, out_chs, stride)
        self.mhca = Mhca(out_chs)
        self.attn_drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm = nn.BatchNorm2d(out_chs)
        self.mlp = Mlp(out_chs, make_divisible(out_chs * mlp_ratio, 32), act_layer=nn.ReLU, drop=drop, use_conv=True)
        self.mlp_drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + self.attn_drop_path(self.mhca(x))
        return x + self.mlp_drop_path(self.mlp(self.norm(x)))


class NextTransformerBlock(nn.Module):
    """NTB: [re-embed to 3/4 width] -> ``x + E-MHSA(BN(x))``; ``y = proj(x)`` to 1/4 width,
    ``y + MHCA(y)``; ``z = cat(x, y)`` -> ``z + MLP(BN(z))``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, sr_ratio: int = 1, drop_path: float = 0.0,
                 drop: float = 0.0, attn_drop: float = 0.0, mlp_ratio: float = 2.0,
                 mix_block_ratio: float = 0.75) -> None:
        super().__init__()
        mhsa_chs = make_divisible(int(out_chs * mix_block_ratio), 32)
        mhca_chs = out_chs - mhsa_chs
        self.patch_embed = _embed(in_chs, mhsa_chs, stride)
        self.norm1 = nn.BatchNorm2d(mhsa_chs)
        self.e_mhsa = EfficientMhsa(mhsa_chs, sr_ratio=sr_ratio, attn_drop=attn_drop, proj_drop=drop)
        self.mhsa_drop_path = DropPath(drop_path * mix_block_ratio) if drop_path > 0.0 else nn.Identity()
        self.projection = ConvNormEmbed(mhsa_chs, mhca_chs)
        self.mhca = Mhca(mhca_chs)
        self.mhca_drop_path = DropPath(drop_path * (1 - mix_block_ratio)) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(out_chs)
        self.mlp = Mlp(out_chs, make_divisible(out_chs * mlp_ratio, 32), act_layer=nn.ReLU, drop=drop, use_conv=True)
        self.mlp_drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        attn = self.e_mhsa(self.norm1(x).flatten(2).transpose(1, 2))
        x = x + self.mhsa_drop_path(attn.transpose(1, 2).reshape(b, c, h, w))
        y = self.projection(x)
        y = y + self.mhca_drop_path(self.mhca(y))
        x = torch.cat([x, y], dim=1)
        return x + self.mlp_drop_path(self.mlp(self.norm2(x)))


class NextStage(nn.Module):
    """A run of NCB/NTB blocks; the first one strides (``stride``) and widens."""

    def __init__(self, in_chs: int, block_chs: list[int], block_types: list[str], stride: int, sr_ratio: int,
                 dp_rates: list[float], drop: float = 0.0, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.grad_checkpointing = False
        blocks = []
        for i, (chs, kind) in enumerate(zip(block_chs, block_types)):
            s = stride if i == 0 else 1
            if kind == "ncb":
                blocks.append(NextConvBlock(in_chs, chs, s, dp_rates[i], drop))
            else:
                blocks.append(NextTransformerBlock(in_chs, chs, s, sr_ratio, dp_rates[i], drop, attn_drop))
            in_chs = chs
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def _stage_layout(depths: tuple[int, ...]) -> tuple[list[list[int]], list[list[str]]]:
    """Block widths and types per stage (the paper's hybrid strategy): stage 1 all NCB; stages 2
    and 4 NCBs closed by one NTB; stage 3 repeats (4 NCB + 1 NTB)."""
    d0, d1, d2, d3 = depths
    chs = [[96] * d0, [192] * (d1 - 1) + [256], [384, 384, 384, 384, 512] * (d2 // 5), [768] * (d3 - 1) + [1024]]
    types = [["ncb"] * d0, ["ncb"] * (d1 - 1) + ["ntb"], ["ncb", "ncb", "ncb", "ncb", "ntb"] * (d2 // 5),
             ["ncb"] * (d3 - 1) + ["ntb"]]
    return chs, types


class NextViT(StagesFinalNormMixin, FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Conv stem (stride 4), four NCB/NTB stages (each stage end one feature level), final BN,
    global average pool and a linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, depths: tuple[int, ...] = (3, 4, 10, 3), stem_chs: tuple[int, ...] = (64, 32, 64),
                 sr_ratios: tuple[int, ...] = (8, 4, 2, 1), num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.stem = nn.Sequential(
            ConvLayer(in_chans, stem_chs[0], 3, stride=2, act_layer=nn.ReLU),
            ConvLayer(stem_chs[0], stem_chs[1], 3, act_layer=nn.ReLU),
            ConvLayer(stem_chs[1], stem_chs[2], 3, act_layer=nn.ReLU),
            ConvLayer(stem_chs[2], stem_chs[2], 3, stride=2, act_layer=nn.ReLU))
        chs, types = _stage_layout(depths)
        dpr = drop_path_rates(drop_path_rate, [len(c) for c in chs])
        in_chs, stages = stem_chs[-1], []
        for i in range(len(chs)):
            stages.append(NextStage(in_chs, chs[i], types[i], 1 if i == 0 else 2, sr_ratios[i], dpr[i],
                                    proj_drop_rate, attn_drop_rate))
            in_chs = chs[i][-1]
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=c[-1], reduction=4 * 2 ** i, module=f"stages.{i}") for i, c in enumerate(chs)]
        self.norm: nn.Module = nn.BatchNorm2d(in_chs)
        self.num_features = self.head_hidden_size = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)



_small = Variant(NextViT, depths=(3, 4, 10, 3))
VARIANTS: dict[str, Variant] = {
    "nextvit_small": _small,
    "nextvit_base": _small.but(depths=(3, 4, 20, 3)),
    "nextvit_large": _small.but(depths=(3, 4, 30, 3)),
}
register_family("nextvit", VARIANTS)
