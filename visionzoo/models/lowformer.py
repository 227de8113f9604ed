"""LowFormer: hardware-efficient convolutional transformer backbones (Nottebaum et al., 2024,
arXiv:2409.03460).

An EfficientViT-style macro design measured for throughput rather than MACs: a conv stem, fused
MBConv down-sampling (stride 2) at the start of each of four stages, fused-MBConv blocks in the two
high-resolution stages and attention only at strides 16 and 32. Its attention ("lowtention") runs
at a lower resolution and width than the block: a depthwise conv (+BN) shrinks the map (stride 2
at stride 16, stride 1 at stride 32), a 1x1 conv makes q/k/v with half the block's channels,
softmax attention mixes all tokens, and a transposed conv restores resolution and width. A block
is pre-norm lowtention, a pre-norm 1x1 MLP and a local (fused-)MBConv, each residual. The E
models drop attention (E1/E2) or the norm and MLP around it (E3). The head is a 1x1 conv, global
pool, linear + LayerNorm + act and the classifier.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.norm import GroupNorm1
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .efficientvit_mit import ConvLayer, FusedMBConv, MBConv, ResidualBlock

__all__ = ["LowFormer", "Lowtention"]


class Lowtention(nn.Module):
    """Softmax attention on a down-sampled, half-width copy of the map.

    ``conv_proj`` (depthwise ``k x k``, stride ``stride``, BN) -> ``pwise`` (1x1, q/k/v of
    ``dim // 2`` channels each, split into ``heads``) -> scaled dot-product attention over all
    low-resolution tokens -> ``upsampling`` (transposed conv, stride ``stride``) back to ``dim``
    channels at the input resolution.
    """

    def __init__(self, dim: int, heads: int, kernel: int, stride: int) -> None:
        super().__init__()
        inner = dim // 2
        self.heads, self.head_dim, self.stride = heads, inner // heads, stride
        self.scale = self.head_dim ** -0.5
        self.conv_proj = ConvLayer(dim, dim, kernel, stride, groups=dim)
        self.pwise = nn.Conv2d(dim, 3 * inner, 1, bias=False)
        up_k = 2 * stride if stride > 1 else 3  # k4 s2 p1 doubles the size exactly; k3 s1 p1 keeps it
        self.upsampling = nn.ConvTranspose2d(inner, dim, up_k, stride, padding=1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``softmax(q k^T * scale) v`` per head, tokens on dim -2."""
        return F.scaled_dot_product_attention(q, k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = self.pwise(self.conv_proj(x))
        h, w = y.shape[-2], y.shape[-1]
        q, k, v = y.reshape(b, self.heads, 3 * self.head_dim, h * w).transpose(-1, -2).chunk(3, dim=-1)
        out = self.attend(q, k, v)
        out = out.transpose(-1, -2).reshape(b, self.heads * self.head_dim, h, w)
        return self.upsampling(out)


class BiasedFusedMBConv(FusedMBConv):
    """Residual fused MBConv of the attention stages: its 3x3 expansion has a bias and a BN."""

    def __init__(self, dim: int, expand: float, act_layer: type) -> None:
        super().__init__(dim, dim, 1, expand, act_layer)
        self.spatial_conv = ConvLayer(dim, round(dim * expand), 3, bias=True, act_layer=act_layer)


class ConvMlp(nn.Sequential):
    """Pre-norm 1x1 MLP: GroupNorm(1), 1x1 (bias), GELU (not the trunk's activation), 1x1 (bias)."""

    def __init__(self, dim: int, expand: float) -> None:
        hidden = round(dim * expand)
        super().__init__(GroupNorm1(dim), nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))


class LowFormerBlock(nn.Module):
    """``attn`` (lowtention, pre-norm unless ``plain``), ``mlp`` (``full`` only), ``local`` conv block,
    each residual. ``attn_mode`` ``none`` keeps only the local block."""

    def __init__(self, dim: int, attn_mode: str, local: str, heads: int, attn_kernel: int, attn_stride: int,
                 expand: float, act_layer: type, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn = self.mlp = None
        if attn_mode != "none":
            attn: nn.Module = Lowtention(dim, heads, attn_kernel, attn_stride)
            if attn_mode == "full":
                attn = nn.Sequential(GroupNorm1(dim), attn)
            self.attn = ResidualBlock(attn, drop_path=drop_path)
            if attn_mode == "full":
                self.mlp = ResidualBlock(ConvMlp(dim, expand), drop_path=drop_path)
        block = BiasedFusedMBConv(dim, expand, act_layer) if local == "fmb" else \
            MBConv(dim, dim, 1, expand, act_layer, fewer_norm=True)
        self.local = ResidualBlock(block, drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = self.attn(x)
        if self.mlp is not None:
            x = self.mlp(x)
        return self.local(x)


class Stage(nn.Sequential):
    """A stage's blocks (kept as ``stages.i.j``), checkpointed one by one when asked."""

    def __init__(self, *blocks: nn.Module) -> None:
        super().__init__(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self, x)
        for block in self:
            x = block(x)
        return x


class LowFormer(FeatureMixin, ModelForwardMixin, nn.Module):
    """Conv stem (stride 2) and four stages (strides 4..32); lowtention blocks in the last two."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64, 128, 256), depths: Sequence[int] = (0, 0, 0, 3, 4),
                 down_expand: float = 4.0, expand: float = 4.0, locals_: Sequence[str] = ("fmb", "mb"),
                 attn_mode: str = "full", attn_kernels: Sequence[int] = (5, 3), attn_strides: Sequence[int] = (2, 1),
                 head_dim: int = 32, head_widths: Sequence[int] = (1536, 1600), act_layer: LayerType = "hard_swish",
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        act = get_act_layer(act_layer)
        self.stem = nn.Sequential(ConvLayer(in_chans, widths[0], 3, 2, act_layer=act))
        for _ in range(depths[0]):
            self.stem.append(ResidualBlock(FusedMBConv(widths[0], widths[0], 1, expand, act)))
        dpr = drop_path_rates(drop_path_rate, list(depths[1:]))
        stages, self.feature_info = [], []
        for i in range(4):
            dim = widths[i + 1]
            blocks = [ResidualBlock(FusedMBConv(widths[i], dim, 2, down_expand, act), residual=False)]
            for j in range(depths[i + 1]):
                if i < 2:
                    blocks.append(ResidualBlock(FusedMBConv(dim, dim, 1, expand, act), drop_path=dpr[i][j]))
                else:
                    blocks.append(LowFormerBlock(dim, attn_mode, locals_[i - 2], dim // 2 // head_dim,
                                                 attn_kernels[i - 2], attn_strides[i - 2], expand, act, dpr[i][j]))
            stages.append(Stage(*blocks))
            self.feature_info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.head_hidden_size = head_widths[1]
        self.in_conv = ConvLayer(widths[-1], head_widths[0], 1, act_layer=act)
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.pre_classifier = nn.Sequential(nn.Linear(head_widths[0], head_widths[1], bias=False),
                                            nn.LayerNorm(head_widths[1]), act())
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_widths[1], num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """1x1 conv, pool, linear + LayerNorm + act, classifier; an empty pool returns the conv's map."""
        x = self.in_conv(x)
        if self.global_pool.is_identity():
            return x
        x = self.head_drop(self.pre_classifier(self.global_pool(x)))
        return x if pre_logits else self.classifier(x)


_b0 = Variant(LowFormer, widths=(16, 32, 64, 128, 256), depths=(0, 0, 0, 3, 4), down_expand=4.0)
_b3 = Variant(LowFormer, widths=(32, 64, 128, 256, 512), depths=(1, 1, 2, 6, 6), down_expand=6.0,
              locals_=("mb", "mb"))
VARIANTS: dict[str, Variant] = {
    "lowformer_b0": _b0,
    "lowformer_b1": _b0.but(depths=(0, 0, 0, 5, 5), down_expand=6.0),
    "lowformer_b2": _b0.but(widths=(24, 48, 96, 192, 384), depths=(0, 0, 0, 6, 6), down_expand=6.0,
                            head_widths=(2304, 2560)),
    "lowformer_b3": _b3,
    "lowformer_b15": _b0.but(widths=(20, 40, 80, 160, 320), depths=(0, 0, 0, 6, 6), down_expand=6.0,
                             head_widths=(2304, 2560)),
    "lowformer_e1": _b0.but(widths=(20, 40, 80, 160, 320), depths=(0, 0, 0, 4, 4), down_expand=6.0,
                            head_widths=(2304, 2560), attn_mode="none"),
    "lowformer_e2": _b3.but(depths=(1, 1, 2, 4, 4), attn_mode="none"),
    "lowformer_e3": _b3.but(attn_mode="plain"),
}
register_family("lowformer", VARIANTS)
