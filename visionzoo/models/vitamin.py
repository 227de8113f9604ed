"""ViTamin: a hybrid vision tower designed for vision-language (CLIP) training.

Paper: Chen et al., 2024, "ViTamin: Designing Scalable Vision Models in the Vision-Language Era",
https://arxiv.org/abs/2404.02132

Two convolutional stages of MBConv-LN blocks (pre-LayerNorm, 1x1 expand, 3x3 depthwise, 1x1
project; the first block of each stage halves the resolution) after a two-conv stem make a
stride-8 map; a LayerNorm + strided 3x3 conv turns it into 16 px tokens for a ViT whose MLP is a
GeGLU with an input LayerNorm. The model is the ViT of ``vision_transformer.py`` with this hybrid
patch embedding and MLP; its head is the CLIP image projection (``num_classes`` = embedding width).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import DropPath
from ..layers.helpers import to_2tuple
from ..layers.norm import LayerNorm2d
from .base import Variant, register_family
from .vision_transformer import VisionTransformer

__all__ = ["ViTamin", "ViTaminConvStem", "MbConvLNBlock", "GeGluMlp", "VARIANTS"]


class MbConvLNBlock(nn.Module):
    """``shortcut(x) + conv3(act(dw3x3(act(conv1(LN(x))))))``; a strided block downsamples in the
    depthwise conv and its shortcut average-pools (3x3, stride 2, padding excluded from the mean)
    and widens with a 1x1 conv."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: float = 4.0,
                 act_layer: LayerType = "gelu", drop_path: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__()
        mid = int(out_chs * expand_ratio)
        self.stride = stride
        self.shortcut = nn.Module()
        self.shortcut.expand = nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()
        self.pre_norm = LayerNorm2d(in_chs, eps=eps)
        self.conv1_1x1 = nn.Conv2d(in_chs, mid, 1)
        self.act1 = get_act_layer(act_layer)()
        self.conv2_kxk = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid)
        self.act2 = get_act_layer(act_layer)()
        self.conv3_1x1 = nn.Conv2d(mid, out_chs, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = F.avg_pool2d(x, 3, self.stride, 1, count_include_pad=False) if self.stride > 1 else x
        short = self.shortcut.expand(short)
        x = self.act1(self.conv1_1x1(self.pre_norm(x)))
        x = self.conv3_1x1(self.act2(self.conv2_kxk(x)))
        return short + self.drop_path(x)


class _TokenPool(nn.Module):
    """LayerNorm then a stride-2 3x3 conv to the transformer width (the "patch" projection)."""

    def __init__(self, in_chs: int, out_chs: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.norm = LayerNorm2d(in_chs, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


class ViTaminConvStem(nn.Module):
    """Stem (3x3 s2 conv, LN, act, 3x3 conv) and two MBConv-LN stages, then the token pool: /16."""

    def __init__(self, in_chans: int, dims: Sequence[int], depths: Sequence[int], embed_dim: int,
                 act_layer: LayerType = "gelu", drop_path_rate: float = 0.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv1 = nn.Conv2d(in_chans, dims[0], 3, stride=2, padding=1)
        self.stem.norm1 = LayerNorm2d(dims[0], eps=eps)
        self.stem.act1 = get_act_layer(act_layer)()
        self.stem.conv2 = nn.Conv2d(dims[0], dims[0], 3, padding=1)
        stages, prev = [], dims[0]
        for dim, depth in zip(dims, depths):
            stages.append(nn.Sequential(*[MbConvLNBlock(prev if i == 0 else dim, dim, stride=2 if i == 0 else 1,
                                                        act_layer=act_layer, eps=eps) for i in range(depth)]))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.pool = _TokenPool(prev, embed_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem
        x = s.conv2(s.act1(s.norm1(s.conv1(x))))
        return self.pool(self.stages(x))


class HybridEmbed(nn.Module):
    """A conv backbone as ViT patch embedding: its /16 map flattened to ``[B, N, C]`` tokens
    (the attributes ViT reads from a patch embedding: ``patch_size``, ``grid_size``, ...)."""

    def __init__(self, backbone: nn.Module, img_size: int | Sequence[int], patch_size: int = 16) -> None:
        super().__init__()
        self.img_size: Tuple[int, int] = to_2tuple(img_size)
        self.patch_size: Tuple[int, int] = (patch_size, patch_size)
        self.grid_size: Tuple[int, int] = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dynamic_img_pad = False
        self.backbone = backbone

    def feat_ratio(self) -> Tuple[int, int]:
        return self.patch_size

    def dynamic_feat_size(self, img_size: Sequence[int]) -> Tuple[int, int]:
        return -(-img_size[0] // self.patch_size[0]), -(-img_size[1] // self.patch_size[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).flatten(2).transpose(1, 2)


class GeGluMlp(nn.Module):
    """LayerNorm on the input, then ``w2(act(w0 x) * w1 x)`` (GeGLU, Shazeer 2020)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: LayerType = "gelu",
                 norm_layer: Any = None, bias: bool = True, drop: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features, eps=1e-6)
        self.w0 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = get_act_layer(act_layer)()
        self.w1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.drop = nn.Dropout(drop)
        self.w2 = nn.Linear(hidden_features, in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.w2(self.drop(self.act(self.w0(x)) * self.w1(x)))


class ViTamin(VisionTransformer):
    """:class:`VisionTransformer` over the MBConv-LN hybrid embedding with GeGLU MLPs.

    Args:
        stem_dims, stem_depths: widths and depths of the two MBConv-LN stages (the stem has
            ``stem_dims[0]`` channels).
        remaining arguments as :class:`VisionTransformer` (``mlp_ratio`` sizes the GeGLU).
    """

    def __init__(self, *, img_size: int | Sequence[int] = 224, in_chans: int = 3, embed_dim: int = 768,
                 stem_dims: Sequence[int] = (128, 256), stem_depths: Sequence[int] = (2, 4),
                 drop_path_rate: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("mlp_layer", GeGluMlp)
        super().__init__(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim, patch_size=16,
                         drop_path_rate=drop_path_rate, **kwargs)
        backbone = ViTaminConvStem(in_chans, stem_dims, stem_depths, embed_dim)
        self.patch_embed = HybridEmbed(backbone, img_size, 16)  # same slot: state_dict order kept
        self.patch_embed.backbone.apply(self._init_conv)

    @staticmethod
    def _init_conv(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


_CLIP_HEAD = dict(class_token=False, global_pool="avg", mlp_ratio=2.0)
_small = Variant(ViTamin, embed_dim=384, depth=14, num_heads=6, stem_dims=(64, 128), num_classes=768, **_CLIP_HEAD)
_base = Variant(ViTamin, embed_dim=768, depth=14, num_heads=12, stem_dims=(128, 256), num_classes=768, **_CLIP_HEAD)
_large = Variant(ViTamin, embed_dim=1024, depth=31, num_heads=16, stem_dims=(160, 320), num_classes=768,
                 **_CLIP_HEAD)
_xlarge = Variant(ViTamin, embed_dim=1152, depth=32, num_heads=16, stem_dims=(192, 384), num_classes=1152,
                  pos_embed="none", **_CLIP_HEAD)

VARIANTS: Dict[str, Variant] = {
    "vitamin_small_224": _small,
    "vitamin_base_224": _base,
    "vitamin_large_224": _large,
    "vitamin_large_256": _large.but(img_size=256),
    "vitamin_large_336": _large.but(img_size=336),
    "vitamin_large_384": _large.but(img_size=384),
    "vitamin_large2_224": _large.but(num_classes=1024),
    "vitamin_large2_256": _large.but(num_classes=1024, img_size=256),
    "vitamin_large2_336": _large.but(num_classes=1024, img_size=336),
    "vitamin_large2_384": _large.but(num_classes=1024, img_size=384),
    "vitamin_xlarge_256": _xlarge.but(img_size=256),
    "vitamin_xlarge_336": _xlarge.but(img_size=336),
    "vitamin_xlarge_384": _xlarge.but(img_size=384),
}
register_family("vitamin", VARIANTS)
