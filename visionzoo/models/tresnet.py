"""TResNet (Ridnik et al., 2021, "TResNet: High Performance GPU-Dedicated Architecture").

A ResNet re-balanced for GPU throughput:

* a space-to-depth stem: 4x4 pixel blocks are folded into channels (``3 * 16``), then one 3x3 conv;
* basic blocks in the two high-resolution stages, bottlenecks in the others (``v2``: bottlenecks
  everywhere), each stage's width a multiple of ``64 * width_factor``;
* anti-aliased downsampling: strided 3x3 convs run at stride 1 and are followed by a 3x3 binomial
  blur-pool of stride 2; projection shortcuts average-pool 2x2 (ceil mode) before their 1x1 conv;
* SE in the first three stages (hidden width at least 64), placed after the 3x3 conv of a bottleneck;
* leaky-ReLU inside the blocks (the original's in-place activated BatchNorm), ReLU after the sum.

The layout is the published one: ``body`` holds the stem and ``layer1..4``, ``head.fc`` classifies.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.blur_pool import BlurPool2d
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import ClassifierHead
from ..layers.squeeze_excite import SEModule
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["TResNet", "SpaceToDepth", "VARIANTS"]

_block_act = partial(nn.LeakyReLU, negative_slope=1e-3)


class SpaceToDepth(nn.Module):
    """``[B, C, H, W] -> [B, C * b * b, H / b, W / b]``; channel ``(i * b + j) * C + c`` holds pixel
    ``(i, j)`` of each ``b x b`` block."""

    def __init__(self, block_size: int = 4) -> None:
        super().__init__()
        self.bs = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bs = self.bs
        x = x.reshape(b, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
        return x.reshape(b, c * bs * bs, h // bs, w // bs)


class _TBlock(nn.Module):
    """The tail both blocks share: drop-path, shortcut, ReLU."""

    def _residual(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        return self.act(self.drop_path(out) + shortcut)


class TBasicBlock(_TBlock):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 use_se: bool = True, aa_layer: Optional[Callable[..., nn.Module]] = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = ConvNormAct(inplanes, planes, 3, stride=stride, act_layer=_block_act, aa_layer=aa_layer)
        self.conv2 = ConvNormAct(planes, planes, 3, apply_act=False)
        self.act = nn.ReLU(inplace=True)
        self.se = SEModule(planes, rd_channels=max(planes // 4, 64)) if use_se else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return self._residual(out, x)


class TBottleneck(_TBlock):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 use_se: bool = True, aa_layer: Optional[Callable[..., nn.Module]] = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = ConvNormAct(inplanes, planes, 1, act_layer=_block_act)
        self.conv2 = ConvNormAct(planes, planes, 3, stride=stride, act_layer=_block_act, aa_layer=aa_layer)
        self.se = SEModule(planes, rd_channels=max(planes * self.expansion // 8, 64)) if use_se else None
        self.conv3 = ConvNormAct(planes, planes * self.expansion, 1, apply_act=False)
        self.act = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        if self.se is not None:
            out = self.se(out)
        return self._residual(self.conv3(out), x)


class TResNet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """TResNet-M/L/XL (``width_factor`` 1, 1.2, 1.3) and TResNet-v2 (bottlenecks throughout)."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    default_out_indices = (1, 2, 3, 4)

    def __init__(self, *, layers: Sequence[int], width_factor: float = 1.0, v2: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"TResNet has four stages, got layers={tuple(layers)}")
        self.num_classes = num_classes
        self.in_chans = in_chans  # the stem conv sees in_chans * 16 (space-to-depth)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        aa = partial(BlurPool2d, filt_size=3)
        planes = int(64 * width_factor)
        inplanes = planes
        if v2:
            inplanes, planes = inplanes // 8 * 8, planes // 4 * 4
        kinds = [TBottleneck if v2 else TBasicBlock] * 2 + [TBottleneck] * 2
        total, idx = sum(layers), 0

        body: "OrderedDict[str, nn.Module]" = OrderedDict()
        body["s2d"] = SpaceToDepth(4)
        body["conv1"] = ConvNormAct(in_chans * 16, planes, 3, act_layer=partial(nn.LeakyReLU, negative_slope=1e-2))
        self.feature_info = [dict(num_chs=planes, reduction=2, module="")]
        for i, (depth, kind) in enumerate(zip(layers, kinds)):
            stage_planes, stride = planes * 2 ** i, 1 if i == 0 else 2
            out = stage_planes * kind.expansion
            down = None
            if stride != 1 or inplanes != out:
                ops: list[nn.Module] = [nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)] if stride == 2 else []
                down = nn.Sequential(*ops, ConvNormAct(inplanes, out, 1, apply_act=False))
            blocks = []
            for j in range(depth):
                dpr = drop_path_rate * idx / max(total - 1, 1)
                blocks.append(kind(inplanes, stage_planes, stride if j == 0 else 1, down if j == 0 else None,
                                   use_se=i < 3, aa_layer=aa, drop_path=dpr))
                inplanes, idx = out, idx + 1
            body[f"layer{i + 1}"] = nn.Sequential(*blocks)
            self.feature_info.append(dict(num_chs=out, reduction=4 * 2 ** i, module=f"body.layer{i + 1}"))
        self.body = nn.Sequential(body)
        self.stage_names = [f"layer{i + 1}" for i in range(4)]
        self.num_features = self.head_hidden_size = inplanes
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # residual branches start as identities
            if isinstance(m, TBasicBlock):
                nn.init.zeros_(m.conv2.bn.weight)
            elif isinstance(m, TBottleneck):
                nn.init.zeros_(m.conv3.bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_seq(self._blocks(), self.body.conv1(self.body.s2d(x)))
        return self.body(x)

    def _blocks(self) -> list[nn.Module]:
        """Residual blocks in order."""
        return [b for stage in self._feature_stages() for b in stage.children()]

    # --- FeatureMixin hooks: level 0 = the stem conv's map, 1..4 = layer1..layer4 --------------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body.conv1(self.body.s2d(x))
        return x, x

    def _feature_stages(self) -> list[nn.Module]:
        stages = [getattr(self.body, n) for n in self.stage_names]
        return [s for s in stages if not isinstance(s, nn.Identity)]

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_seq(list(stage.children()), x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        for name in self.stage_names[num_stages:]:
            setattr(self.body, name, nn.Identity())


_T = Variant(TResNet, layers=(3, 4, 11, 3))
VARIANTS: dict[str, Variant] = {
    "tresnet_m": _T,
    "tresnet_l": _T.but(layers=(4, 5, 18, 3), width_factor=1.2),
    "tresnet_xl": _T.but(layers=(4, 5, 24, 3), width_factor=1.3),
    "tresnet_v2_l": _T.but(layers=(3, 4, 23, 3), v2=True),
}

register_family("tresnet", VARIANTS)
