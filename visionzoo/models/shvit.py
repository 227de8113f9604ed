"""SHViT ("SHViT: Single-Head Vision Transformer with Memory Efficient Macro Design", Yun & Ro,
CVPR 2024, https://arxiv.org/abs/2401.16456).

Memory-efficient macro design: a 16x16 patchify stem of four stride-2 conv-BNs, three stages at
strides 16/32/64, and one *single-head* attention that only sees a slice of the channels
(``pdim``, GroupNorm'd, with 16-dim queries and keys); the other channels pass untouched and the
two are recombined by a ReLU + 1x1 conv-BN. Each block is ``dw3x3 -> [attention] -> FFN``, all
residual conv-BN units; stages are joined by dw/FFN residuals around an inverted-residual
stride-2 merge with squeeze-excite. BatchNorm-linear head.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..layers.conv_bn import ConvBN, norm_linear_or_identity
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.norm import GroupNorm1
from ..layers.squeeze_excite import SEModule
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .efficientvit_msra import Residual

__all__ = ["SHViT", "SingleHeadAttention"]


class Ffn(nn.Module):
    """1x1 conv-BN -> ReLU -> 1x1 conv-BN (ratio 2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class SingleHeadAttention(nn.Module):
    """One attention head on the first ``pdim`` channels (after GroupNorm(1)); the rest are
    concatenated back unchanged before ``proj`` (ReLU + 1x1 conv-BN over all channels)."""

    def __init__(self, dim: int, qk_dim: int, pdim: int) -> None:
        super().__init__()
        self.dim, self.qk_dim, self.pdim = dim, qk_dim, pdim
        self.scale = qk_dim ** -0.5
        self.pre_norm = GroupNorm1(pdim)
        self.qkv = ConvBN(pdim, 2 * qk_dim + pdim)
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        q, k, v = self.qkv(self.pre_norm(x1)).flatten(2).split([self.qk_dim, self.qk_dim, self.pdim], dim=1)
        attn = ((q.transpose(1, 2) @ k) * self.scale).softmax(dim=-1)  # [B, N, N]
        x1 = (v @ attn.transpose(1, 2)).reshape(b, self.pdim, h, w)
        return self.proj(torch.cat([x1, x2], dim=1))


def _dw(dim: int) -> ConvBN:
    return ConvBN(dim, dim, 3, groups=dim)


class ShvitBlock(nn.Module):
    """Residual dw 3x3 conv-BN -> residual single-head attention (stages 2-3) -> residual FFN."""

    def __init__(self, dim: int, qk_dim: int, pdim: Optional[int]) -> None:
        super().__init__()
        self.conv = Residual(_dw(dim))
        self.mixer = Residual(SingleHeadAttention(dim, qk_dim, pdim)) if pdim else nn.Identity()
        self.ffn = Residual(Ffn(dim, 2 * dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.mixer(self.conv(x)))


class PatchMerging(nn.Module):
    """Inverted residual without the residual: 1x1 up (x4) -> ReLU -> stride-2 dw 3x3 -> ReLU -> SE -> 1x1."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        hid = 4 * dim
        self.conv1 = ConvBN(dim, hid)
        self.act = nn.ReLU()
        self.conv2 = ConvBN(hid, hid, 3, stride=2, groups=hid)
        self.se = SEModule(hid, rd_ratio=0.25)
        self.conv3 = ConvBN(hid, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


class ShvitStage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, qk_dim: int, pdim: Optional[int], downsample: bool) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = nn.Sequential(Residual(_dw(in_chs)), Residual(Ffn(in_chs, 2 * in_chs)),
                                            PatchMerging(in_chs, dim), Residual(_dw(dim)), Residual(Ffn(dim, 2 * dim)))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[ShvitBlock(dim, qk_dim, pdim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class SHViT(FeatureMixin, ModelForwardMixin, nn.Module):
    """Stride-16 conv stem, three stages (strides 16/32/64), mean pool, BN-linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, embed_dims: Sequence[int] = (128, 224, 320), depths: Sequence[int] = (2, 4, 5),
                 partial_dims: Sequence[Optional[int]] = (None, 48, 68), qk_dim: int = 16, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"SHViT pools by mean ('avg') or not at all (''), got {global_pool!r}")
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.global_pool, self.drop_rate = global_pool, drop_rate
        e = embed_dims[0]
        chs = [in_chans, e // 8, e // 4, e // 2, e]
        layers: list[tuple[str, nn.Module]] = []
        for i in range(4):
            layers.append((str(2 * i), ConvBN(chs[i], chs[i + 1], 3, stride=2)))
            if i < 3:
                layers.append((str(2 * i + 1), nn.ReLU()))
        self.patch_embed = nn.Sequential(OrderedDict(layers))
        self.stages = nn.Sequential(*[
            ShvitStage(embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], qk_dim, partial_dims[i], i > 0)
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=2 ** (i + 4), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head = norm_linear_or_identity(self.num_features, num_classes, drop_rate)

    def get_classifier(self) -> nn.Module:
        return getattr(self.head, "l", self.head)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = norm_linear_or_identity(self.num_features, num_classes, self.drop_rate).train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        return x if pre_logits else self.head(x)

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.patch_embed(x), None


VARIANTS: dict[str, Variant] = {
    "shvit_s1": Variant(SHViT, embed_dims=(128, 224, 320), depths=(2, 4, 5), partial_dims=(None, 48, 68)),
    "shvit_s2": Variant(SHViT, embed_dims=(128, 308, 448), depths=(2, 4, 5), partial_dims=(None, 66, 96)),
    "shvit_s3": Variant(SHViT, embed_dims=(192, 352, 448), depths=(3, 5, 5), partial_dims=(None, 75, 96)),
    "shvit_s4": Variant(SHViT, embed_dims=(224, 336, 448), depths=(4, 7, 6), partial_dims=(None, 72, 96)),
}
register_family("shvit", VARIANTS)
