"""MetaFormer baselines ("MetaFormer Baselines for Vision", Yu et al., 2022,
https://arxiv.org/abs/2210.13452; PoolFormer v1: "MetaFormer Is Actually What You Need for Vision",
Yu et al., CVPR 2022, https://arxiv.org/abs/2111.11418).

One block shape, ``x = res_scale(x) + layer_scale(mixer(norm(x)))`` then the same with an MLP, and
the token mixer decides the model: PoolFormer averages (``avgpool3x3(x) - x``), ConvFormer uses an
inverted separable conv (1x1 up, StarReLU, 7x7 depthwise, 1x1 down), CAFormer puts those in the
first two stages and self-attention in the last two. V2 models use StarReLU MLPs without biases,
bias-free norms, a normed stride-4 stem and ``norm -> conv`` downsampling, and rescale the residual
(``res_scale``) in the deep stages instead of layer scale; Conv/CAFormer classify with an MLP head.
Conv stages run on NCHW maps (1x1 convs), attention stages channels-last (linear layers).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention import Attention
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.mlp import Mlp
from ..layers.norm import GroupNorm1, LayerNorm, LayerNorm2d
from ..layers.pool import SelectAdaptivePool2d
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["MetaFormer", "StarReLU", "SquaredReLU", "Pooling", "SepConv", "MetaFormerBlock", "VARIANTS"]


class StarReLU(nn.Module):
    """``s * relu(x)^2 + b`` with a learned scalar scale and bias (MetaFormer baselines, Sec. 3.1)."""

    def __init__(self, scale_value: float = 0.8944, bias_value: float = -0.4472) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), scale_value))
        self.bias = nn.Parameter(torch.full((1,), bias_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.relu(x).square() + self.bias


class SquaredReLU(nn.Module):
    """``relu(x)^2`` (So et al., 2021), the MLP head's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class GroupNorm1NoBias(GroupNorm1):
    """GroupNorm(1) with a weight but no bias (PoolFormer v2)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs) -> None:
        super().__init__(num_channels, eps=eps)
        self.bias = None


class Scale(nn.Module):
    """Per-channel multiplier (layer scale or residual scale) on NCHW or channels-last tensors."""

    def __init__(self, dim: int, init_value: float = 1.0, nchw: bool = True) -> None:
        super().__init__()
        self.shape = (dim, 1, 1) if nchw else (dim,)
        self.scale = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


class Pooling(nn.Module):
    """PoolFormer's token mixer: ``avgpool3x3(x) - x`` (the block adds ``x`` back)."""

    def __init__(self, dim: int, pool_size: int = 3, **kwargs) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class SepConv(nn.Module):
    """ConvFormer's token mixer: the MobileNetV2 inverted separable conv, 1x1 up (x2) -> StarReLU ->
    7x7 depthwise -> 1x1 down, without biases."""

    def __init__(self, dim: int, expansion_ratio: float = 2.0, kernel_size: int = 7, **kwargs) -> None:
        super().__init__()
        mid = int(expansion_ratio * dim)
        self.pwconv1 = nn.Conv2d(dim, mid, 1, bias=False)
        self.act1 = StarReLU()
        self.dwconv = nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, groups=mid, bias=False)
        self.act2 = nn.Identity()
        self.pwconv2 = nn.Conv2d(mid, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.act2(self.dwconv(self.act1(self.pwconv1(x)))))


class TokenAttention(Attention):
    """Bias-free multi-head self-attention (head dim 32) on a channels-last ``[B, H, W, C]`` map."""

    def __init__(self, dim: int, head_dim: int = 32, **kwargs) -> None:
        super().__init__(dim, num_heads=max(dim // head_dim, 1), qkv_bias=False, proj_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        return self.attend(x.reshape(b, h * w, c)).reshape(b, h, w, c)


class IdentityMixer(nn.Identity):
    """The identity token mixer of the MetaFormer ablations (no spatial mixing at all)."""

    def __init__(self, dim: int = 0, **kwargs) -> None:
        super().__init__()


_MIXERS: dict[str, Callable[..., nn.Module]] = {
    "pool": Pooling, "sepconv": SepConv, "attention": TokenAttention, "identity": IdentityMixer}


class MetaFormerBlock(nn.Module):
    """``x = rs1(x) + ls1(mixer(norm1(x)))``, ``x = rs2(x) + ls2(mlp(norm2(x)))``; NCHW when the
    mixer is convolutional, channels-last for attention."""

    def __init__(self, dim: int, token_mixer: str = "pool", mlp_act: Callable[..., nn.Module] = StarReLU,
                 mlp_bias: bool = False, norm_layer: Callable[..., nn.Module] = LayerNorm2d,
                 nchw: bool = True, drop_path: float = 0.0, layer_scale_init: float | None = None,
                 res_scale_init: float | None = None, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        scale = partial(Scale, dim, nchw=nchw)
        drop = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm1 = norm_layer(dim)
        self.token_mixer = _MIXERS[token_mixer](dim)
        self.drop_path1 = drop
        self.layer_scale1 = scale(layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.res_scale1 = scale(res_scale_init) if res_scale_init is not None else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=mlp_act, bias=mlp_bias, use_conv=nchw)
        self.drop_path2 = drop
        self.layer_scale2 = scale(layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.res_scale2 = scale(res_scale_init) if res_scale_init is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))


class Downsample(nn.Module):
    """``norm -> conv`` (norm absent in PoolFormer v1); the stem is the stride-4 7x7 ``conv -> norm``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                 norm_layer: Callable[..., nn.Module] | None = None, norm_first: bool = True) -> None:
        super().__init__()
        if norm_first:
            self.norm = norm_layer(in_chs) if norm_layer else nn.Identity()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding)
        if not norm_first:
            self.norm = norm_layer(out_chs) if norm_layer else nn.Identity()
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x)) if not self.norm_first else self.conv(self.norm(x))


class MetaFormerStage(nn.Module):
    """Optional downsample, then blocks; attention stages permute to channels-last and back."""

    def __init__(self, in_chs: int, dim: int, depth: int, token_mixer: str, downsample: bool, downsample_norm,
                 dp_rates, **block_kw) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.nchw = token_mixer != "attention"
        self.downsample = Downsample(in_chs, dim, norm_layer=downsample_norm) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[MetaFormerBlock(dim, token_mixer, nchw=self.nchw, drop_path=dp_rates[i],
                                                      **block_kw) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if not self.nchw:
            x = x.permute(0, 2, 3, 1)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x if self.nchw else x.permute(0, 3, 1, 2)


class MetaFormerHead(nn.Module):
    """Global pool -> LayerNorm (on the ``[B, C, 1, 1]`` map, so an unpooled head still works) ->
    flatten -> dropout -> classifier: a linear layer, or (Conv/CAFormer) an MLP
    ``fc1 -> SquaredReLU -> LayerNorm -> fc2``."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0,
                 mlp_ratio: float | None = None, norm_bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.mlp_ratio = in_features, mlp_ratio
        self.global_pool = SelectAdaptivePool2d(pool_type)
        self.norm = LayerNorm2d(in_features, bias=norm_bias)
        self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._make_fc(num_classes)

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.mlp_ratio:
            return Mlp(self.in_features, int(self.mlp_ratio * self.in_features), num_classes,
                       act_layer=SquaredReLU, norm_layer=LayerNorm)
        return nn.Linear(self.in_features, num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type)
            self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.fc = self._make_fc(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.flatten(self.norm(self.global_pool(x))))
        if pre_logits:
            return x
        if not self.flatten_output() and not isinstance(self.fc, nn.Identity):
            return self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(x)

    def flatten_output(self) -> bool:
        return isinstance(self.flatten, nn.Flatten)


_NORMS: dict[str, Callable[..., nn.Module]] = {
    "groupnorm1": GroupNorm1,
    "groupnorm1_nobias": GroupNorm1NoBias,
    "layernorm2d_nobias": partial(LayerNorm2d, bias=False),
}


class MetaFormer(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Stride-4 7x7 conv stem, four MetaFormer stages (strides 4..32) with a per-stage token mixer,
    and a pool -> LayerNorm -> linear/MLP head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, depths: Sequence[int] = (2, 2, 6, 2), dims: Sequence[int] = (64, 128, 320, 512),
                 token_mixers: str | Sequence[str] = "pool", mlp_act: str = "starrelu", mlp_bias: bool = False,
                 norm_layer: str = "layernorm2d_nobias", stem_norm: bool = True, downsample_norm: bool = True,
                 layer_scale_init: float | None = None,
                 res_scale_init: Sequence[float | None] = (None, None, 1.0, 1.0),
                 head_mlp_ratio: float | None = 4.0, head_norm_bias: bool = True, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        n = len(depths)
        mixers = [token_mixers] * n if isinstance(token_mixers, str) else list(token_mixers)
        norm2d = _NORMS[norm_layer]
        act = StarReLU if mlp_act == "starrelu" else nn.GELU
        down_norm = partial(LayerNorm2d, bias=False) if downsample_norm else None
        self.stem = Downsample(in_chans, dims[0], 7, 4, 2, norm_layer=down_norm if stem_norm else None,
                               norm_first=False)
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            MetaFormerStage(dims[max(i - 1, 0)], dims[i], depths[i], mixers[i], i > 0, down_norm, dpr[i],
                            mlp_act=act, mlp_bias=mlp_bias,
                            norm_layer=norm2d if mixers[i] != "attention" else partial(LayerNorm, bias=False),
                            layer_scale_init=layer_scale_init, res_scale_init=res_scale_init[i])
            for i in range(n)])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}") for i in range(n)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = MetaFormerHead(dims[-1], num_classes, global_pool, drop_rate, head_mlp_ratio, head_norm_bias)

    def get_classifier(self) -> nn.Module:
        fc = self.head.fc
        return fc.fc2 if isinstance(fc, Mlp) else fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)


_CA = ("sepconv", "sepconv", "attention", "attention")
_pool1 = Variant(MetaFormer, mlp_act="gelu", mlp_bias=True, norm_layer="groupnorm1", stem_norm=False,
                 downsample_norm=False, layer_scale_init=1e-5, res_scale_init=(None,) * 4, head_mlp_ratio=None)
_pool2 = Variant(MetaFormer, norm_layer="groupnorm1_nobias", head_mlp_ratio=None)
_conv = Variant(MetaFormer, token_mixers="sepconv", depths=(3, 3, 9, 3))
_S, _M, _B = (64, 128, 320, 512), (96, 192, 384, 768), (128, 256, 512, 768)
_M36 = (96, 192, 384, 576)
VARIANTS: dict[str, Variant] = {
    "poolformer_s12": _pool1,
    "poolformer_s24": _pool1.but(depths=(4, 4, 12, 4)),
    "poolformer_s36": _pool1.but(depths=(6, 6, 18, 6)),
    "poolformer_m36": _pool1.but(depths=(6, 6, 18, 6), dims=_M),
    "poolformer_m48": _pool1.but(depths=(8, 8, 24, 8), dims=_M),
    "poolformerv2_s12": _pool2,
    "poolformerv2_s24": _pool2.but(depths=(4, 4, 12, 4)),
    "poolformerv2_s36": _pool2.but(depths=(6, 6, 18, 6)),
    "poolformerv2_m36": _pool2.but(depths=(6, 6, 18, 6), dims=_M),
    "poolformerv2_m48": _pool2.but(depths=(8, 8, 24, 8), dims=_M),
    "convformer_s18": _conv,
    "convformer_s36": _conv.but(depths=(3, 12, 18, 3)),
    "convformer_m36": _conv.but(depths=(3, 12, 18, 3), dims=_M36),
    "convformer_b36": _conv.but(depths=(3, 12, 18, 3), dims=_B),
    "caformer_s18": _conv.but(token_mixers=_CA),
    "caformer_s36": _conv.but(token_mixers=_CA, depths=(3, 12, 18, 3)),
    "caformer_m36": _conv.but(token_mixers=_CA, depths=(3, 12, 18, 3), dims=_M36),
    "caformer_b36": _conv.but(token_mixers=_CA, depths=(3, 12, 18, 3), dims=_B),
}
register_family("metaformer", VARIANTS)
