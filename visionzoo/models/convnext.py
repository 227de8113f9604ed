"""ConvNeXt (Liu et al., 2022, "A ConvNet for the 2020s") and ConvNeXt V2 (Woo et al., 2023).

A ConvNeXt block is ``depthwise 7x7 conv -> norm -> 1x1 expand (4x) -> GELU -> 1x1 project``,
scaled per channel (layer scale, V1) and added to the input. Stages are separated by
``norm -> 2x2 stride-2 conv`` downsampling; the stem is a 4x4 stride-4 "patchify" conv + norm
(or two overlapping 3x3 stride-2 convs in the ``*_ols`` variants). V2 drops layer scale and adds
Global Response Normalization inside the MLP.

The MLP runs either channels-last with ``nn.Linear`` (``conv_mlp=False``) or on NCHW with 1x1
convs (``conv_mlp=True``, the small variants); both layouts match the published checkpoints.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.grn import GlobalResponseNormMlp
from ..layers.helpers import make_divisible, to_ntuple
from ..layers.mlp import Mlp
from ..layers.norm import LayerNorm, LayerNorm2d, RmsNorm, RmsNorm2d, SimpleNorm, SimpleNorm2d, get_norm_layer
from ..layers.pool import ClassifierHead, NormMlpClassifierHead
from ..layers.weight_init import trunc_normal_
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["ConvNeXt", "ConvNeXtBlock", "ConvNeXtStage", "VARIANTS"]

# channels-first norm -> its channels-last counterpart (for the Linear MLP layout)
_CHANNELS_LAST = {LayerNorm2d: LayerNorm, RmsNorm2d: RmsNorm, SimpleNorm2d: SimpleNorm}


def _norm_pair(norm_layer: LayerType, eps: float | None) -> tuple[Callable[..., nn.Module], Callable[..., nn.Module]]:
    """(channels-first norm, its channels-last counterpart for the Linear MLP layout)."""
    if norm_layer is None or isinstance(norm_layer, str):
        name = norm_layer or "layernorm2d"
        channels_last = name[:-2] if name.endswith("2d") else name
        return get_norm_layer(name, eps=eps), get_norm_layer(channels_last, eps=eps)
    pair = (norm_layer, _CHANNELS_LAST.get(norm_layer, norm_layer))
    return pair if eps is None else (partial(pair[0], eps=eps), partial(pair[1], eps=eps))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> norm -> inverted-bottleneck MLP, layer-scaled, residual."""

    def __init__(self, dim: int, *, kernel_size: int = 7, dilation: int = 1, mlp_ratio: float = 4.0,
                 conv_mlp: bool = False, conv_bias: bool = True, use_grn: bool = False,
                 ls_init_value: float | None = 1e-6, act_layer: LayerType = "gelu",
                 norm_layer: Callable[..., nn.Module] = LayerNorm2d,
                 norm_layer_cl: Callable[..., nn.Module] = LayerNorm, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv_mlp = conv_mlp
        hidden = int(mlp_ratio * dim)
        # parameters owned by the block itself come first in its state_dict
        self.gamma = nn.Parameter(torch.full((dim,), float(ls_init_value))) if ls_init_value is not None else None
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                                 dilation=dilation, groups=dim, bias=conv_bias)
        self.norm = norm_layer(dim) if conv_mlp else norm_layer_cl(dim)
        mlp_cls = GlobalResponseNormMlp if use_grn else Mlp
        self.mlp = mlp_cls(dim, hidden, act_layer=get_act_layer(act_layer), use_conv=conv_mlp)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x)
        if self.conv_mlp:
            x = self.mlp(self.norm(x))
        else:
            x = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        return self.drop_path(x) + shortcut


class _SamePadConv2d(nn.Conv2d):
    """Stride-1 conv with 'same' output size for even kernels (extra zero row/col at the end)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.dilation[0] * (self.kernel_size[0] - 1)
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
        return super().forward(x)


class ConvNeXtStage(nn.Module):
    """Optional ``norm -> conv`` downsample followed by ``depth`` blocks."""

    def __init__(self, in_chs: int, out_chs: int, *, depth: int, stride: int = 2, dilation: tuple[int, int] = (1, 1),
                 kernel_size: int = 7, drop_path_rates: Sequence[float] = (), conv_bias: bool = True,
                 norm_layer: Callable[..., nn.Module] = LayerNorm2d, **block_kwargs: Any) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if in_chs != out_chs or stride > 1 or dilation[0] != dilation[1]:
            if stride > 1:
                conv = nn.Conv2d(in_chs, out_chs, 2, stride=stride, bias=conv_bias)
            else:  # output_stride reached: keep the 2x2 weights, stride 1, 'same' padding
                conv = _SamePadConv2d(in_chs, out_chs, 2, dilation=dilation[0], bias=conv_bias)
            self.downsample: nn.Module = nn.Sequential(norm_layer(in_chs), conv)
        else:
            self.downsample = nn.Identity()
        rates = list(drop_path_rates) or [0.0] * depth
        self.blocks = nn.Sequential(*[
            ConvNeXtBlock(out_chs, kernel_size=kernel_size, dilation=dilation[1], conv_bias=conv_bias,
                          norm_layer=norm_layer, drop_path=rates[i], **block_kwargs)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def _make_stem(stem_type: str, in_chans: int, out_chs: int, patch_size: int, conv_bias: bool,
               norm_layer: Callable[..., nn.Module], act_layer: LayerType) -> nn.Sequential:
    """``patch``: kxk stride-k conv + norm. ``overlap*``: two 3x3 stride-2 convs + norm; the
    ``_tiered`` form halves the middle width, ``_act`` puts an activation between the convs."""
    if stem_type == "patch":
        return nn.Sequential(nn.Conv2d(in_chans, out_chs, patch_size, stride=patch_size, bias=conv_bias),
                             norm_layer(out_chs))
    if stem_type not in ("overlap", "overlap_tiered", "overlap_act"):
        raise ValueError(f"unknown ConvNeXt stem_type {stem_type!r}")
    mid = make_divisible(out_chs // 2) if stem_type == "overlap_tiered" else out_chs
    layers: list[nn.Module] = [nn.Conv2d(in_chans, mid, 3, stride=2, padding=1, bias=conv_bias)]
    if stem_type == "overlap_act":
        layers.append(get_act_layer(act_layer)())
    layers += [nn.Conv2d(mid, out_chs, 3, stride=2, padding=1, bias=conv_bias), norm_layer(out_chs)]
    return nn.Sequential(*layers)


class ConvNeXt(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """ConvNeXt / ConvNeXt-V2 backbone with a pooled classifier head."""
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        output_stride: int = 32,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: int | Sequence[int] = 7,
        ls_init_value: float | None = 1e-6,
        stem_type: str = "patch",
        patch_size: int = 4,
        head_init_scale: float = 1.0,
        head_norm_first: bool = False,
        head_hidden_size: int | None = None,
        conv_mlp: bool = False,
        conv_bias: bool = True,
        use_grn: bool = False,
        act_layer: LayerType = "gelu",
        norm_layer: LayerType = None,
        norm_eps: float | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        num_stages = len(depths)
        kernel_sizes = to_ntuple(kernel_sizes, num_stages)
        norm, norm_cl = _norm_pair(norm_layer, norm_eps)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.stem = _make_stem(stem_type, in_chans, dims[0], patch_size, conv_bias, norm, act_layer)
        stride = patch_size if stem_type == "patch" else 4
        dilation = 1
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        prev = dims[0]
        for i in range(num_stages):
            stage_stride = 2 if i > 0 else 1
            first_dilation = dilation
            if stride >= output_stride and stage_stride > 1:
                dilation *= stage_stride
                stage_stride = 1
            stride *= stage_stride
            stages.append(ConvNeXtStage(
                prev, dims[i], depth=depths[i], stride=stage_stride, dilation=(first_dilation, dilation),
                kernel_size=kernel_sizes[i], drop_path_rates=rates[i], conv_bias=conv_bias, norm_layer=norm,
                norm_layer_cl=norm_cl, ls_init_value=ls_init_value, conv_mlp=conv_mlp, use_grn=use_grn,
                act_layer=act_layer))
            prev = dims[i]
            self.feature_info.append(dict(num_chs=prev, reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = prev

        if head_norm_first:
            if head_hidden_size:
                raise ValueError("head_norm_first does not support head_hidden_size")
            self.norm_pre: nn.Module = norm(self.num_features)
            self.head: nn.Module = ClassifierHead(self.num_features, num_classes, pool_type=global_pool,
                                                  drop_rate=drop_rate)
            self.head_hidden_size = self.num_features
        else:
            self.norm_pre = nn.Identity()
            self.head = NormMlpClassifierHead(self.num_features, num_classes, hidden_size=head_hidden_size,
                                              pool_type=global_pool, drop_rate=drop_rate, norm_layer=norm,
                                              act_layer="gelu")
            self.head_hidden_size = self.head.num_features
        self._init_weights(head_init_scale)

    def _init_weights(self, head_init_scale: float) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        fc = getattr(self.head, "fc", None)
        if isinstance(fc, (nn.Linear, nn.Conv2d)) and head_init_scale != 1.0:
            with torch.no_grad():
                fc.weight.mul_(head_init_scale)
                fc.bias.mul_(head_init_scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stages(x)
        return self.norm_pre(x)

    # --- FeatureMixin hooks: levels = stage outputs (NCHW, or NHWC on request) -----------
    # ``norm_pre`` (the ``head_norm_first`` norm, else identity) is the final op; ``norm=True``
    # applies it to the last stage's map.
    _stem_level = False
    _output_fmts = ("NCHW", "NHWC")
    _norm_is_final = True

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_pre(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if prune_norm:
            self.norm_pre = nn.Identity()

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Accept checkpoints in the original facebookresearch layout as well as ours."""
        if "downsample_layers.0.0.weight" not in state_dict:
            return state_dict
        own = model.state_dict()
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            k = k.replace("downsample_layers.0.", "stem.")
            if k.startswith("downsample_layers."):
                _, i, rest = k.split(".", 2)
                k = f"stages.{i}.downsample.{rest}"
            if k.startswith("stages.") and ".downsample." not in k:
                _, i, j, rest = k.split(".", 3)
                k = f"stages.{i}.blocks.{j}.{rest}"
            k = k.replace("dwconv", "conv_dw").replace("pwconv", "mlp.fc")
            k = k.replace("grn.gamma", "mlp.grn.weight").replace("grn.beta", "mlp.grn.bias")
            if k.startswith("norm."):
                k = "head." + k
            elif k.startswith("head."):
                k = k.replace("head.", "head.fc.", 1)
            if k in own:
                v = v.reshape(own[k].shape) if v.numel() == own[k].numel() else v
            out[k] = v
        return out


# --- variants ----------------------------------------------------------------------------------
_D_ATTO, _D_FEMTO, _D_PICO = (40, 80, 160, 320), (48, 96, 192, 384), (64, 128, 256, 512)
_D_NANO, _D_ZEPTO = (80, 160, 320, 640), (32, 64, 128, 256)
_D_T, _D_B, _D_L = (96, 192, 384, 768), (128, 256, 512, 1024), (192, 384, 768, 1536)
_D_XL, _D_XXL, _D_H = (256, 512, 1024, 2048), (384, 768, 1536, 3072), (352, 704, 1408, 2816)
_S, _S_N, _S_T, _S_B = (2, 2, 6, 2), (2, 2, 8, 2), (3, 3, 9, 3), (3, 3, 27, 3)

_atto = Variant(ConvNeXt, depths=_S, dims=_D_ATTO, conv_mlp=True)
_femto = Variant(ConvNeXt, depths=_S, dims=_D_FEMTO, conv_mlp=True)
_pico = Variant(ConvNeXt, depths=_S, dims=_D_PICO, conv_mlp=True)
_nano = Variant(ConvNeXt, depths=_S_N, dims=_D_NANO, conv_mlp=True)
_zepto_rms = Variant(ConvNeXt, depths=(2, 2, 4, 2), dims=_D_ZEPTO, conv_mlp=True, norm_layer="simplenorm2d")
_tiny, _small = Variant(ConvNeXt, depths=_S_T, dims=_D_T), Variant(ConvNeXt, depths=_S_B, dims=_D_T)
_base, _large = Variant(ConvNeXt, depths=_S_B, dims=_D_B), Variant(ConvNeXt, depths=_S_B, dims=_D_L)
_v2 = dict(use_grn=True, ls_init_value=None)
_test = Variant(ConvNeXt, depths=(1, 1, 1, 1), dims=(32, 64, 96, 128), norm_eps=1e-5)

VARIANTS: dict[str, Variant] = {
    "convnext_zepto_rms": _zepto_rms,
    "convnext_zepto_rms_ols": _zepto_rms.but(stem_type="overlap_act"),
    "convnext_atto": _atto,
    "convnext_atto_ols": _atto.but(stem_type="overlap_tiered"),
    "convnext_atto_rms": _atto.but(norm_layer="rmsnorm2d"),
    "convnext_femto": _femto,
    "convnext_femto_ols": _femto.but(stem_type="overlap_tiered"),
    "convnext_pico": _pico,
    "convnext_pico_ols": _pico.but(stem_type="overlap_tiered"),
    "convnext_nano": _nano,
    "convnext_nano_ols": _nano.but(stem_type="overlap"),
    "convnext_tiny_hnf": _tiny.but(conv_mlp=True, head_norm_first=True),
    "convnext_tiny": _tiny,
    "convnext_small": _small,
    "convnext_base": _base,
    "convnext_large": _large,
    "convnext_large_mlp": _large.but(head_hidden_size=1536),
    "convnext_xlarge": Variant(ConvNeXt, depths=_S_B, dims=_D_XL),
    "convnext_xxlarge": Variant(ConvNeXt, depths=(3, 4, 30, 3), dims=_D_XXL, norm_eps=1e-5),
    "convnextv2_atto": _atto.but(**_v2),
    "convnextv2_femto": _femto.but(**_v2),
    "convnextv2_pico": _pico.but(**_v2),
    "convnextv2_nano": _nano.but(**_v2),
    "convnextv2_tiny": _tiny.but(**_v2),
    "convnextv2_small": _small.but(**_v2),
    "convnextv2_base": _base.but(**_v2),
    "convnextv2_large": _large.but(**_v2),
    "convnextv2_huge": Variant(ConvNeXt, depths=_S_B, dims=_D_H, **_v2),
    "test_convnext": _test.but(depths=(1, 2, 4, 2), dims=(24, 32, 48, 64), act_layer="gelu_tanh"),
    "test_convnext2": _test.but(act_layer="gelu_tanh"),
    "test_convnext3": _test.but(kernel_sizes=(7, 5, 5, 3), act_layer="silu"),
}

register_family("convnext", VARIANTS)
