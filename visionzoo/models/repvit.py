"""RepViT ("RepViT: Revisiting Mobile CNN From ViT Perspective", Wang et al., CVPR 2024,
https://arxiv.org/abs/2307.09283).

A MobileNetV3 block reorganised like a MetaFormer: the depthwise conv is pulled out as a token
mixer (``3x3 dw-BN + 1x1 dw(-BN) + identity``, a RepVGG-style multi-branch that
:meth:`RepVggDw.reparameterize` folds into one 3x3 depthwise conv), squeeze-excite on every other
block, and a residual 1x1 conv-BN MLP (ratio 2) as channel mixer. Stride-4 two-conv stem, a
separate downsampling layer (block, stride-2 dw conv, 1x1 conv, residual MLP), and distilled
BatchNorm-linear heads averaged at inference.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..layers.conv_bn import ConvBN, distilled_logits, norm_linear_or_identity
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.squeeze_excite import SEModule
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .byobnet import _fold_conv_bn, _identity_kernel, _pad_to

__all__ = ["RepVit", "RepVggDw", "RepVitBlock"]


class RepVggDw(nn.Module):
    """Depthwise token mixer ``bn(dw3x3_bn(x) + dw1x1(x) + x)``; the older (``legacy``) weights
    have a BN on the 1x1 branch instead of one after the sum. :meth:`reparameterize` folds all
    branches into ``reparam_conv``, one biased 3x3 depthwise conv (exact in eval mode)."""

    def __init__(self, dim: int, legacy: bool = False) -> None:
        super().__init__()
        self.dim, self.legacy = dim, legacy
        self.conv = ConvBN(dim, dim, 3, groups=dim)
        if legacy:
            self.conv1 = ConvBN(dim, dim, 1, groups=dim)
            self.bn = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(dim, dim, 1, groups=dim)
            self.bn = nn.BatchNorm2d(dim)
        self.reparam_conv: Optional[nn.Conv2d] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return self.bn(self.conv(x) + self.conv1(x) + x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the three branches (and the trailing BN) into ``reparam_conv`` (inference only)."""
        if self.reparam_conv is not None:
            return
        w, b = _fold_conv_bn(self.conv.c.weight, self.conv.bn)
        if self.legacy:
            w1, b1 = _fold_conv_bn(self.conv1.c.weight, self.conv1.bn)
        else:
            w1, b1 = self.conv1.weight, self.conv1.bias
        w = w + _pad_to(w1, 3) + _identity_kernel(self.dim, self.dim, 3, w)
        b = b + b1
        if isinstance(self.bn, nn.BatchNorm2d):
            w, scale_b = _fold_conv_bn(w, self.bn)
            b = b * (self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)) + scale_b
        conv = nn.Conv2d(self.dim, self.dim, 3, padding=1, groups=self.dim, device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        for name in ("conv", "conv1", "bn"):
            delattr(self, name)
        self.bn = nn.Identity()  # keeps ``self.bn`` resolvable for scripting after the fold
        self.reparam_conv = conv


class ConvMlp(nn.Module):
    """1x1 conv-BN -> GELU -> 1x1 conv-BN (the channel mixer; the caller adds the residual)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, hidden)
        self.act = nn.GELU()
        self.conv2 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class RepVitBlock(nn.Module):
    """Token mixer -> optional SE -> ``x + mlp(x)``."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0, use_se: bool = False, legacy: bool = False,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.token_mixer = RepVggDw(dim, legacy)
        self.se = SEModule(dim, rd_ratio=0.25) if use_se else nn.Identity()
        self.channel_mixer = ConvMlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.drop_path(self.channel_mixer(x))


class RepVitDownsample(nn.Module):
    """Block at the input width, stride-2 3x3 dw conv-BN, 1x1 conv-BN to the new width, ``x + mlp(x)``."""

    def __init__(self, in_chs: int, out_chs: int, mlp_ratio: float, legacy: bool) -> None:
        super().__init__()
        self.pre_block = RepVitBlock(in_chs, mlp_ratio, use_se=False, legacy=legacy)
        self.spatial_downsample = ConvBN(in_chs, in_chs, 3, stride=2, groups=in_chs)
        self.channel_downsample = ConvBN(in_chs, out_chs, 1)
        self.ffn = ConvMlp(out_chs, int(out_chs * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class RepVitStage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, downsample: bool, mlp_ratio: float, legacy: bool,
                 dp_rates: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = RepVitDownsample(in_chs, dim, mlp_ratio, legacy) if downsample else nn.Identity()
        # squeeze-excite on every other block, starting with the first
        self.blocks = nn.Sequential(*[RepVitBlock(dim, mlp_ratio, use_se=i % 2 == 0, legacy=legacy,
                                                  drop_path=dp_rates[i]) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class RepVitStem(nn.Module):
    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_chs, out_chs // 2, 3, stride=2)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(out_chs // 2, out_chs, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act1(self.conv1(x)))


class RepVitHead(nn.Module):
    """Class and distillation BatchNorm-linear heads on the pooled features (``head``, ``head_dist``)."""

    def __init__(self, dim: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.dim, self.drop_rate = dim, drop_rate
        self.head = norm_linear_or_identity(dim, num_classes, drop_rate)
        self.head_dist = norm_linear_or_identity(dim, num_classes)
        self.distilled_training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return distilled_logits(self.head(x), self.head_dist(x), self.distilled_training and self.training)


class RepVit(FeatureMixin, ModelForwardMixin, nn.Module):
    """Stride-4 stem, four stages (strides 4..32), mean pool, distilled BN-linear heads."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, depths: Sequence[int] = (2, 2, 14, 2), dims: Sequence[int] = (48, 96, 192, 384),
                 mlp_ratio: float = 2.0, legacy: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"RepViT pools by mean ('avg') or not at all (''), got {global_pool!r}")
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.global_pool, self.drop_rate = global_pool, drop_rate
        self.stem = RepVitStem(in_chans, dims[0])
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            RepVitStage(dims[max(i - 1, 0)], dims[i], depths[i], i > 0, mlp_ratio, legacy, dpr[i])
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = RepVitHead(dims[-1], num_classes, drop_rate)

    def get_classifier(self) -> nn.Module:
        return self.head.head.l if hasattr(self.head.head, "l") else self.head.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        distilled = self.head.distilled_training
        self.head = RepVitHead(self.num_features, num_classes, self.drop_rate).train(self.training)
        self.head.distilled_training = distilled

    def set_distilled_training(self, enable: bool = True) -> None:
        """Training mode then returns both heads' logits (for the distillation loss)."""
        self.head.distilled_training = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        if pre_logits:
            return x
        return self.head(x)


_m1 = Variant(RepVit, depths=(2, 2, 14, 2), dims=(48, 96, 192, 384))
_m2 = _m1.but(depths=(2, 2, 12, 2), dims=(64, 128, 256, 512))
VARIANTS: dict[str, Variant] = {
    "repvit_m1": _m1.but(legacy=True),
    "repvit_m2": _m2.but(legacy=True),
    "repvit_m3": _m2.but(depths=(4, 4, 18, 2), legacy=True),
    "repvit_m0_9": _m1,
    "repvit_m1_0": _m1.but(dims=(56, 112, 224, 448)),
    "repvit_m1_1": _m2,
    "repvit_m1_5": _m2.but(depths=(4, 4, 24, 4)),
    "repvit_m2_3": _m1.but(depths=(6, 6, 34, 2), dims=(80, 160, 320, 640)),
}
register_family("repvit", VARIANTS)
