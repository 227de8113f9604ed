"""Hybrid Vision Transformers: a CNN computes the feature map that the ViT tokenises.

Papers:
    * ViT (the R50 hybrids): Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929
    * AugReg (R26/R50 S32 hybrids, Ti/16 on a stem): Steiner et al., 2022, https://arxiv.org/abs/2106.10270
    * BiT backbone (GroupNorm + weight standardisation): Kolesnikov et al., 2020, https://arxiv.org/abs/1912.11370
    * ResNet-D stems: He et al., 2019, "Bag of Tricks", https://arxiv.org/abs/1812.01187
    * MobileCLIP MCi (convolutional stem): Vasu et al., 2024, https://arxiv.org/abs/2311.17049

The patch embedding is :class:`HybridEmbed`: ``backbone`` (a CNN returning one map) then
``proj`` (a ``patch_size`` conv to the token width, 1x1 for most models). Everything after it is
:class:`~visionzoo.models.vision_transformer.VisionTransformer`. The CNNs are ours: the
``resnet*d`` hybrids use :class:`~visionzoo.models.resnet.ResNet` cut after the wanted stage;
the BiT ones are ResNetV2 stages (:class:`~visionzoo.models.resnetv2.ResNetStage`) of
non-pre-activation bottlenecks with GroupNorm, weight-standardised "same"-padded convs.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.conv_norm_act import ConvNormAct
from ..layers.helpers import to_2tuple
from ..layers.norm_act import GroupNormAct
from ..layers.padding import MaxPool2dSame
from ..layers.patch_embed import resample_patch_embed
from ..layers.std_conv import StdConv2d
from .base import Variant, register_family
from .resnet import ResNet
from .resnetv2 import ResNetStage
from .vision_transformer import VisionTransformer

__all__ = ["HybridEmbed", "VisionTransformerHybrid", "BitBottleneck", "bit_backbone", "resnet_backbone",
           "conv_stem", "VARIANTS"]


# --------------------------------------------------------------------------------------------
# CNN backbones (each: an nn.Module mapping an image to one NCHW map, plus its stride/channels)
# --------------------------------------------------------------------------------------------

def _bit_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> nn.Module:
    return StdConv2d(in_chs, out_chs, kernel_size, stride=stride, padding="same", eps=1e-8)


class BitBottleneck(nn.Module):
    """Post-activation bottleneck of the BiT hybrid: 1x1 -> 3x3 (strided) -> 1x1, each conv
    followed by GroupNorm (the last without activation), the sum activated after the shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, bottle_ratio: float = 0.25) -> None:
        super().__init__()
        mid = int(out_chs * bottle_ratio)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(OrderedDict([
                ("conv", _bit_conv(in_chs, out_chs, 1, stride)), ("norm", GroupNormAct(out_chs, apply_act=False))]))
        self.conv1 = _bit_conv(in_chs, mid, 1)
        self.norm1 = GroupNormAct(mid)
        self.conv2 = _bit_conv(mid, mid, 3, stride)
        self.norm2 = GroupNormAct(mid)
        self.conv3 = _bit_conv(mid, out_chs, 1)
        self.norm3 = GroupNormAct(out_chs, apply_act=False)
        self.act3 = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.norm3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm3(self.conv3(self.norm2(self.conv2(self.norm1(self.conv1(x))))))
        return self.act3(x + shortcut)


class _BitBackbone(nn.Module):
    """BiT stem (7x7/2 "same" conv, GroupNorm-ReLU, 3x3/2 "same" max pool) and bottleneck stages."""

    def __init__(self, stem: nn.Module, stages: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


def bit_backbone(layers: Sequence[int], in_chans: int = 3, stem_chs: int = 64,
                 channels: Sequence[int] = (256, 512, 1024, 2048)) -> tuple[nn.Module, int, int]:
    """(module, stride, channels) of a BiT ResNet cut after ``len(layers)`` stages; with no
    stages the module is the stem itself (``conv``/``norm``/``pool``)."""
    stem = nn.Sequential(OrderedDict([
        ("conv", _bit_conv(in_chans, stem_chs, 7, 2)), ("norm", GroupNormAct(stem_chs)),
        ("pool", MaxPool2dSame(3, stride=2))]))
    if not layers:
        return stem, 4, stem_chs
    stages, prev, stride = [], stem_chs, 4
    for i, depth in enumerate(layers):
        s = 1 if i == 0 else 2
        stride *= s
        stages.append(ResNetStage([BitBottleneck(prev if j == 0 else channels[i], channels[i], s if j == 0 else 1)
                                   for j in range(depth)]))
        prev = channels[i]
    return _BitBackbone(stem, nn.Sequential(*stages)), stride, prev


def resnet_backbone(layers: Sequence[int], num_stages: int, in_chans: int = 3) -> tuple[nn.Module, int, int]:
    """(module, stride, channels) of our ResNet-D (deep stem, average-pool shortcuts) kept up to
    stage ``num_stages``; its head is removed and later stages become identities."""
    net = ResNet(layers=tuple(layers), stem_width=32, stem_type="deep", avg_down=True, in_chans=in_chans,
                 num_classes=0, global_pool="")
    net.prune_intermediate_layers(indices=[num_stages], prune_head=True)
    info = net.feature_info[num_stages]
    return net, info["reduction"], info["num_chs"]


def conv_stem(channels: Sequence[int], kernels: Sequence[int], in_chans: int = 3,
              act_layer: str = "gelu") -> tuple[nn.Module, int, int]:
    """(module, stride, channels) of a non-overlapping conv stem (MobileCLIP MCi): conv-BN-act
    layers with kernel = stride, then a plain conv (with bias) to the last width."""
    layers: list[nn.Module] = []
    prev = in_chans
    for c, k in zip(channels[:-1], kernels[:-1]):
        layers.append(ConvNormAct(prev, c, k, stride=k, padding=0, act_layer=act_layer))
        prev = c
    layers.append(_Conv(prev, channels[-1], kernels[-1]))
    return nn.Sequential(*layers), math.prod(kernels), channels[-1]


class _Conv(nn.Module):
    """A plain strided conv kept under the name ``conv`` (checkpoint layout of the MCi stem)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# --------------------------------------------------------------------------------------------
# patch embedding
# --------------------------------------------------------------------------------------------

class HybridEmbed(nn.Module):
    """CNN feature map -> tokens: ``backbone`` then ``proj`` (``patch_size`` conv over the map, or
    none when the backbone already ends at the token width).

    Exposes the :class:`~visionzoo.layers.patch_embed.PatchEmbed` attributes the ViT reads:
    ``img_size``, ``patch_size`` (total reduction), ``grid_size``, ``num_patches``,
    ``dynamic_feat_size``.
    """

    def __init__(self, backbone: nn.Module, backbone_stride: int, feature_dim: int,
                 img_size: int | Sequence[int] = 224, patch_size: int = 1, embed_dim: int = 768,
                 proj: bool = True, output_fmt: str = "NLC", strict_img_size: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone_stride = backbone_stride
        self.feat_patch = to_2tuple(patch_size)
        self.patch_size = (backbone_stride * self.feat_patch[0], backbone_stride * self.feat_patch[1])
        self.output_fmt = output_fmt
        self.strict_img_size = strict_img_size
        self.img_size: tuple[int, int] = to_2tuple(img_size)
        self.grid_size: tuple[int, int] = self.dynamic_feat_size(self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        if proj:
            self.proj: nn.Module = nn.Conv2d(feature_dim, embed_dim, self.feat_patch, stride=self.feat_patch)
        else:
            if feature_dim != embed_dim:
                raise ValueError(f"backbone ends at {feature_dim} channels; embed_dim {embed_dim} needs proj=True")
            self.proj = nn.Identity()

    def feat_ratio(self) -> tuple[int, int]:
        return self.patch_size

    def dynamic_feat_size(self, img_size: Sequence[int]) -> tuple[int, int]:
        """Token grid for an input size (padded convs round the backbone's map up)."""
        s = self.backbone_stride
        return (-(-int(img_size[0]) // s) // self.feat_patch[0], -(-int(img_size[1]) // s) // self.feat_patch[1])

    def set_input_size(self, img_size: Optional[int | Sequence[int]] = None,
                       patch_size: Optional[int | Sequence[int]] = None) -> None:
        """New input size and/or patch size over the feature map (the proj kernel is resampled)."""
        if patch_size is not None and isinstance(self.proj, nn.Conv2d):
            new = to_2tuple(patch_size)
            if new != self.feat_patch:
                self.proj.weight = nn.Parameter(resample_patch_embed(self.proj.weight.detach(), new))
                self.proj.kernel_size = self.proj.stride = new
                self.feat_patch = new
                self.patch_size = (self.backbone_stride * new[0], self.backbone_stride * new[1])
        if img_size is not None:
            self.img_size = to_2tuple(img_size)
        self.grid_size = self.dynamic_feat_size(self.img_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if self.strict_img_size and (h != self.img_size[0] or w != self.img_size[1]):
            raise ValueError(f"input size ({h}, {w}) does not match the model's img_size {self.img_size}; "
                             f"create the model with dynamic_img_size=True or call set_input_size()")
        x = self.proj(self.backbone(x))
        x = x.permute(0, 2, 3, 1)
        return x.flatten(1, 2) if self.output_fmt == "NLC" else x


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------

class VisionTransformerHybrid(VisionTransformer):
    """A :class:`~visionzoo.models.vision_transformer.VisionTransformer` whose patch embedding is
    a :class:`HybridEmbed` over a CNN.

    Args (beyond the ViT's):
        backbone: ``f(in_chans) -> (module, stride, channels)``; see :func:`bit_backbone`,
            :func:`resnet_backbone`, :func:`conv_stem`.
        patch_size: patch size over the CNN's feature map (1: one token per feature pixel).
        proj: project the map with a ``patch_size`` conv (off when the CNN ends at ``embed_dim``).
    """

    def __init__(self, *, backbone: Callable[[int], tuple[nn.Module, int, int]], img_size: int | Sequence[int] = 224,
                 patch_size: int = 1, proj: bool = True, in_chans: int = 3, embed_dim: int = 768,
                 dynamic_img_size: bool = False, **kwargs: Any) -> None:
        cnn, stride, chs = backbone(in_chans)
        embed = HybridEmbed(cnn, stride, chs, img_size=img_size, patch_size=patch_size, embed_dim=embed_dim,
                            proj=proj, output_fmt="NHWC" if dynamic_img_size else "NLC",
                            strict_img_size=not dynamic_img_size)
        # the ViT is laid out for the hybrid's token grid: its own (replaced) patch embedding has
        # the hybrid's total reduction as patch size
        super().__init__(img_size=img_size, patch_size=embed.patch_size, in_chans=in_chans, embed_dim=embed_dim,
                         dynamic_img_size=dynamic_img_size, **kwargs)
        self.patch_embed = embed
        if self.pos_embed is not None and self.pos_embed.shape[1] != self._embed_len():
            raise ValueError("hybrid token grid does not match the position embedding")

    def _embed_len(self) -> int:
        return self.patch_embed.num_patches + (0 if self.no_embed_class else self.num_prefix_tokens)

    def set_input_size(self, img_size: Optional[int | Sequence[int]] = None,
                       patch_size: Optional[int | Sequence[int]] = None) -> None:
        """Run a built model at another input size (and/or patch size over the CNN map): the
        position embedding is resampled to the new token grid (prefix rows kept)."""
        from ..layers.pos_embed import resample_abs_pos_embed

        old_grid = self.patch_embed.grid_size
        self.patch_embed.set_input_size(img_size, patch_size)
        new_grid = self.patch_embed.grid_size
        if self.pos_embed is not None and new_grid != old_grid:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            self.pos_embed = nn.Parameter(resample_abs_pos_embed(self.pos_embed.detach(), new_grid,
                                                                 old_size=old_grid, num_prefix_tokens=prefix))
        for info in self.feature_info:
            info["reduction"] = self.patch_embed.patch_size[0]


def _v(backbone: Callable[[int], tuple[nn.Module, int, int]], **kw: Any) -> Variant:
    return Variant(VisionTransformerHybrid, backbone=backbone, **kw)


_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
_L = dict(embed_dim=1024, depth=24, num_heads=16)
_S_OLD = dict(embed_dim=768, depth=8, num_heads=8, mlp_ratio=3.0)  # the first "ViT-S" (timm's early hybrids)

_r26 = partial(bit_backbone, (2, 2, 2, 2))
_r50_s16 = partial(bit_backbone, (3, 4, 9))
_r50_s32 = partial(bit_backbone, (3, 4, 6, 3))
_stem = partial(bit_backbone, ())


def _resnet(layers: Sequence[int], stages: int) -> Callable[[int], tuple[nn.Module, int, int]]:
    return partial(resnet_backbone, tuple(layers), stages)


def _mci(in_chans: int) -> tuple[nn.Module, int, int]:
    return conv_stem((192, 192, 768), (4, 2, 2), in_chans=in_chans)


VARIANTS: dict[str, Variant] = {
    "vit_tiny_r_s16_p8_224": _v(_stem, **_TI, patch_size=8),
    "vit_tiny_r_s16_p8_384": _v(_stem, **_TI, patch_size=8, img_size=384),
    "vit_small_r26_s32_224": _v(_r26, **_S),
    "vit_small_r26_s32_384": _v(_r26, **_S, img_size=384),
    "vit_base_r26_s32_224": _v(_r26, **_B),
    "vit_base_r50_s16_224": _v(_r50_s16, **_B),
    "vit_base_r50_s16_384": _v(_r50_s16, **_B, img_size=384),
    "vit_large_r50_s32_224": _v(_r50_s32, **_L),
    "vit_large_r50_s32_384": _v(_r50_s32, **_L, img_size=384),
    "vit_small_resnet26d_224": _v(_resnet((2, 2, 2, 2), 4), **_S_OLD),
    "vit_small_resnet50d_s16_224": _v(_resnet((3, 4, 6, 3), 3), **_S_OLD),
    "vit_base_resnet26d_224": _v(_resnet((2, 2, 2, 2), 4), **_B),
    "vit_base_resnet50d_224": _v(_resnet((3, 4, 6, 3), 4), **_B),
    "vit_base_mci_224": _v(_mci, **_B, proj=False, no_embed_class=True),
}

register_family("vision_transformer_hybrid", VARIANTS)
