"""Selective Kernel networks (Li et al., 2019, "Selective Kernel Networks"): SK-ResNet / SK-ResNeXt.

ResNets whose spatial conv (the first 3x3 of a basic block, the 3x3 of a bottleneck) is a
selective-kernel conv (:class:`~visionzoo.layers.selective_kernel.SelectiveKernel`): two paths
with 3x3 and dilated 3x3 (5x5 receptive field) kernels, mixed per channel by a softmax attention.

The network is our :class:`~visionzoo.models.resnet.ResNet` with these blocks.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath
from ..layers.selective_kernel import SelectiveKernel
from .base import Variant, register_family
from .resnet import ResNet

__all__ = ["SelectiveKernelBasic", "SelectiveKernelBottleneck", "VARIANTS"]


class _SKBlock(nn.Module):
    """The tail both SK blocks share: attention, drop-path, shortcut, activation."""

    def _init_tail(self, outplanes: int, downsample: nn.Module | None, act_layer: Callable[..., nn.Module],
                   attn_layer: Callable[[int], nn.Module] | None, drop_path: float) -> None:
        self.se = attn_layer(outplanes) if attn_layer is not None else None
        self.act = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _finish(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act(x + shortcut)


class SelectiveKernelBasic(_SKBlock):
    """SK conv 3x3 (stride) -> conv 3x3 + norm, added to the shortcut (SK-ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 cardinality: int = 1, base_width: int = 64, sk_kwargs: dict[str, Any] | None = None,
                 reduce_first: int = 1, dilation: int = 1, first_dilation: int | None = None,
                 act_layer: Callable[..., nn.Module] = nn.ReLU, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 attn_layer: Callable[[int], nn.Module] | None = None, drop_path: float = 0.0, **_: Any) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("SelectiveKernelBasic supports only cardinality=1 and base_width=64")
        first_planes = planes // reduce_first
        outplanes = planes * self.expansion
        self.conv1 = SelectiveKernel(inplanes, first_planes, stride=stride, dilation=first_dilation or dilation,
                                     act_layer=act_layer, norm_layer=norm_layer, **(sk_kwargs or {}))
        self.conv2 = ConvNormAct(first_planes, outplanes, 3, padding=dilation, dilation=dilation, apply_act=False,
                                 norm_layer=norm_layer)
        self._init_tail(outplanes, downsample, act_layer, attn_layer, drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self.conv2(self.conv1(x)), x)


class SelectiveKernelBottleneck(_SKBlock):
    """1x1 -> SK conv 3x3 (stride, grouped) -> 1x1 (x4) + norm, added to the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, *,
                 cardinality: int = 1, base_width: int = 64, sk_kwargs: dict[str, Any] | None = None,
                 reduce_first: int = 1, dilation: int = 1, first_dilation: int | None = None,
                 act_layer: Callable[..., nn.Module] = nn.ReLU, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
                 attn_layer: Callable[[int], nn.Module] | None = None, drop_path: float = 0.0, **_: Any) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * cardinality
        first_planes = width // reduce_first
        outplanes = planes * self.expansion
        self.conv1 = ConvNormAct(inplanes, first_planes, 1, act_layer=act_layer, norm_layer=norm_layer)
        self.conv2 = SelectiveKernel(first_planes, width, stride=stride, dilation=first_dilation or dilation,
                                     groups=cardinality, act_layer=act_layer, norm_layer=norm_layer,
                                     **(sk_kwargs or {}))
        self.conv3 = ConvNormAct(width, outplanes, 1, apply_act=False, norm_layer=norm_layer)
        self._init_tail(outplanes, downsample, act_layer, attn_layer, drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self.conv3(self.conv2(self.conv1(x))), x)


def _sk(layers: tuple[int, ...], block: type, sk_kwargs: dict[str, Any], **kwargs: Any) -> Variant:
    return Variant(ResNet, layers=layers, block=block, block_args=dict(sk_kwargs=sk_kwargs), **kwargs)


_SK_BASIC = dict(rd_ratio=1 / 8, rd_divisor=16, split_input=True)
VARIANTS: dict[str, Variant] = {
    "skresnet18": _sk((2, 2, 2, 2), SelectiveKernelBasic, _SK_BASIC, zero_init_last=False),
    "skresnet34": _sk((3, 4, 6, 3), SelectiveKernelBasic, _SK_BASIC, zero_init_last=False),
    "skresnet50": _sk((3, 4, 6, 3), SelectiveKernelBottleneck, dict(split_input=True), zero_init_last=False),
    "skresnet50d": _sk((3, 4, 6, 3), SelectiveKernelBottleneck, dict(split_input=True), zero_init_last=False,
                       stem_type="deep", stem_width=32, avg_down=True),
    "skresnext50_32x4d": _sk((3, 4, 6, 3), SelectiveKernelBottleneck,
                             dict(rd_ratio=1 / 16, rd_divisor=32, split_input=False), cardinality=32, base_width=4),
}

register_family("sknet", VARIANTS)
