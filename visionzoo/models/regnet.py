"""RegNet: "Designing Network Design Spaces" (Radosavovic et al., 2020).

https://arxiv.org/abs/2003.13678

A RegNet is a ResNeXt-style stack of bottleneck blocks whose per-block widths follow a quantized
linear rule: ``u_j = w0 + wa * j`` for ``j < depth``, snapped to the nearest power of ``wm`` times
``w0`` (rounded to a multiple of 8); consecutive equal widths form a stage. RegNetX blocks are
plain; RegNetY add squeeze-excitation. Also here:

* ``regnetz``: inverted bottlenecks (``bottle_ratio`` 4), SiLU, no projection shortcuts, linear
  block outputs and an optional 1x1 ``final_conv`` to ``num_features``;
* ``regnetv``: pre-activation blocks (norm-act before each conv) with a plain-conv stem;
* ``_tv`` variants: torchvision's width rounding (round half up, never more than 10% down);
* ``_sgn``: SiLU and GroupNorm (16 channels per group) instead of ReLU and BatchNorm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..layers.activations import get_act_layer
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import make_divisible
from ..layers.norm import get_norm_layer
from ..layers.norm_act import BatchNormAct2d
from ..layers.pool import ClassifierHead
from ..layers.squeeze_excite import SEModule
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["RegNet", "RegNetCfg", "VARIANTS", "generate_regnet", "regnet_stage_params"]


@dataclass(frozen=True)
class RegNetCfg:
    """A point of the RegNet design space plus block options.

    ``w0, wa, wm, depth``: the width rule's initial width, slope, quantization base and block count;
    ``group_size``: channels per group of the 3x3 conv; ``bottle_ratio``: bottleneck (3x3 conv)
    width over block output width; ``se_ratio``: SE width over block *input* width (0 = no SE);
    ``downsample``: projection shortcut (``'conv1x1'``, ``'avg'`` = 2x2 avg pool then 1x1, or
    ``None`` = identity shortcuts only); ``linear_out``: no activation after the residual add;
    ``preact``: pre-activation blocks; ``num_features``: width of an extra 1x1 conv before the
    head (0 = none); ``norm_group_size``: channels per group when ``norm_layer='groupnorm'``;
    ``tv_rounding``: torchvision's bottleneck width rounding.
    """

    depth: int = 21
    w0: int = 80
    wa: float = 42.63
    wm: float = 2.66
    group_size: int = 24
    bottle_ratio: float = 1.0
    se_ratio: float = 0.0
    stem_width: int = 32
    downsample: str | None = "conv1x1"
    linear_out: bool = False
    preact: bool = False
    num_features: int = 0
    act_layer: str = "relu"
    norm_layer: str = "batchnorm"
    norm_group_size: int = 16
    tv_rounding: bool = False


def generate_regnet(w0: int, wa: float, wm: float, depth: int, quant: int = 8) -> list[int]:
    """Per-block widths of the quantized linear rule (Radosavovic et al., 2020, Sec. 3.3)."""
    if w0 <= 0 or wa < 0 or wm <= 1 or w0 % quant:
        raise ValueError(f"invalid RegNet parameters w0={w0}, wa={wa}, wm={wm} (need w0 % {quant} == 0, wm > 1)")
    widths = []
    for j in range(depth):
        u = w0 + wa * j
        s = round(math.log(u / w0) / math.log(wm))
        widths.append(int(round(w0 * wm ** s / quant)) * quant)
    return widths


def regnet_stage_params(cfg: RegNetCfg) -> list[tuple[int, int, int, int]]:
    """``(depth, out_width, bottleneck_width, group_size)`` of each stage of ``cfg``.

    Bottleneck widths are made a multiple of the group size (which is clamped to the width).
    """
    stages: list[list[int]] = []
    for w in generate_regnet(cfg.w0, cfg.wa, cfg.wm, cfg.depth):
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    out = []
    for w, d in stages:
        wb = int(w * cfg.bottle_ratio)
        g = min(cfg.group_size, wb)
        wb = make_divisible(wb, g) if cfg.tv_rounding else int(round(wb / g) * g)
        out.append((d, int(wb / cfg.bottle_ratio), wb, g))
    return out


def _conv_norm_act(cfg: RegNetCfg, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                   dilation: int = 1, groups: int = 1, apply_act: bool = True) -> ConvNormAct:
    return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups,
                       norm_layer=get_norm_layer(cfg.norm_layer, group_size=cfg.norm_group_size),
                       act_layer=cfg.act_layer, apply_act=apply_act)


def _shortcut(cfg: RegNetCfg, in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
    """Projection shortcut where shapes change, else None (identity, or no shortcut at all)."""
    if (in_chs == out_chs and stride == 1) or cfg.downsample is None:
        return None
    if cfg.downsample not in ("conv1x1", "avg"):
        raise ValueError(f"unknown downsample {cfg.downsample!r}; use 'conv1x1', 'avg' or None")
    conv_stride = 1 if cfg.downsample == "avg" else stride
    if cfg.preact:  # the block input is already normalised
        conv: nn.Module = nn.Conv2d(in_chs, out_chs, 1, stride=conv_stride, bias=False)
    else:
        conv = _conv_norm_act(cfg, in_chs, out_chs, 1, stride=conv_stride, apply_act=False)
    if cfg.downsample == "avg":
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        return nn.Sequential(pool, conv)
    return conv


class Bottleneck(nn.Module):
    """1x1 -> grouped 3x3 (strided) -> [SE] -> 1x1, each conv followed by norm (+ act except last)."""

    def __init__(self, cfg: RegNetCfg, in_chs: int, out_chs: int, bottleneck_chs: int, group_size: int,
                 stride: int = 1, dilation: int = 1, drop_path: float = 0.0) -> None:
        super().__init__()
        groups = bottleneck_chs // group_size
        self.conv1 = _conv_norm_act(cfg, in_chs, bottleneck_chs, 1)
        self.conv2 = _conv_norm_act(cfg, bottleneck_chs, bottleneck_chs, 3, stride=stride, dilation=dilation,
                                    groups=groups)
        if cfg.se_ratio:
            self.se = SEModule(bottleneck_chs, rd_channels=int(round(in_chs * cfg.se_ratio)), act_layer=cfg.act_layer)
        else:
            self.se = nn.Identity()
        self.conv3 = _conv_norm_act(cfg, bottleneck_chs, out_chs, 1, apply_act=False)
        self.act3 = nn.Identity() if cfg.linear_out else get_act_layer(cfg.act_layer)()
        self.downsample = _shortcut(cfg, in_chs, out_chs, stride)
        self.has_residual = self.downsample is not None or (in_chs == out_chs and stride == 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        if self.has_residual:
            if self.downsample is not None:
                shortcut = self.downsample(shortcut)
            x = self.drop_path(x) + shortcut
        return self.act3(x)


class PreBottleneck(nn.Module):
    """Pre-activation bottleneck (He et al., 2016): each conv is preceded by norm + act."""

    def __init__(self, cfg: RegNetCfg, in_chs: int, out_chs: int, bottleneck_chs: int, group_size: int,
                 stride: int = 1, dilation: int = 1, drop_path: float = 0.0) -> None:
        super().__init__()
        groups = bottleneck_chs // group_size
        norm_act = partial(BatchNormAct2d, act_layer=cfg.act_layer)
        self.norm1 = norm_act(in_chs)
        self.conv1 = nn.Conv2d(in_chs, bottleneck_chs, 1, bias=False)
        self.norm2 = norm_act(bottleneck_chs)
        self.conv2 = nn.Conv2d(bottleneck_chs, bottleneck_chs, 3, stride=stride, padding=dilation, dilation=dilation,
                               groups=groups, bias=False)
        if cfg.se_ratio:
            self.se = SEModule(bottleneck_chs, rd_channels=int(round(in_chs * cfg.se_ratio)), act_layer=cfg.act_layer)
        else:
            self.se = nn.Identity()
        self.norm3 = norm_act(bottleneck_chs)
        self.conv3 = nn.Conv2d(bottleneck_chs, out_chs, 1, bias=False)
        self.downsample = _shortcut(cfg, in_chs, out_chs, stride)
        self.has_residual = self.downsample is not None or (in_chs == out_chs and stride == 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        shortcut = x
        x = self.conv1(x)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(self.se(x)))
        if self.has_residual:
            if self.downsample is not None:
                shortcut = self.downsample(shortcut)
            x = self.drop_path(x) + shortcut
        return x


class RegStage(nn.Module):
    """One RegNet stage: ``depth`` blocks ``b1..bN``, the first strided (or dilated)."""

    def __init__(self, cfg: RegNetCfg, depth: int, in_chs: int, out_chs: int, bottleneck_chs: int, group_size: int,
                 stride: int, dilation: int, first_dilation: int, drop_path_rates: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        block_cls = PreBottleneck if cfg.preact else Bottleneck
        for i in range(depth):
            self.add_module(f"b{i + 1}", block_cls(
                cfg, in_chs if i == 0 else out_chs, out_chs, bottleneck_chs, group_size,
                stride=stride if i == 0 else 1, dilation=first_dilation if i == 0 else dilation,
                drop_path=drop_path_rates[i]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.children(), x)
        for b in self.children():  # TorchScript unrolls this loop (a list of the children it cannot type)
            x = b(x)
        return x


class RegNet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """RegNet: 3x3/2 stem, four stages ``s1..s4`` (reductions 4..32), optional ``final_conv``, head."""
    feature_cfg = {"feature_cls": "list", "flatten_sequential": False}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        cfg: RegNetCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
        zero_init_last: bool = True,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if overrides:
            unknown = set(overrides) - set(RegNetCfg.__dataclass_fields__)
            if unknown:
                raise TypeError(f"RegNet got unexpected argument(s) {sorted(unknown)}")
            cfg = replace(cfg, **overrides)
        if cfg.preact and cfg.norm_layer != "batchnorm":
            raise ValueError(f"pre-activation RegNets use batchnorm, got norm_layer={cfg.norm_layer!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        if cfg.preact:
            self.stem: nn.Module = nn.Conv2d(in_chans, cfg.stem_width, 3, stride=2, padding=1, bias=False)
        else:
            self.stem = _conv_norm_act(cfg, in_chans, cfg.stem_width, 3, stride=2)
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=cfg.stem_width, reduction=2, module="stem")]

        params = regnet_stage_params(cfg)
        dprs = drop_path_rates(drop_path_rate, [p[0] for p in params])
        in_chs, reduction, dilation = cfg.stem_width, 2, 1
        self.stage_names: list[str] = []
        for i, (d, w, wb, g) in enumerate(params):
            stride, first_dilation = 2, dilation
            if reduction >= output_stride:  # keep the resolution, dilate instead
                dilation *= stride
                stride = 1
            reduction *= stride
            name = f"s{i + 1}"
            self.add_module(name, RegStage(cfg, d, in_chs, w, wb, g, stride, dilation, first_dilation, dprs[i]))
            self.stage_names.append(name)
            self.feature_info.append(dict(num_chs=w, reduction=reduction, module=name))
            in_chs = w

        if cfg.num_features:
            self.final_conv: nn.Module = _conv_norm_act(cfg, in_chs, cfg.num_features, 1)
            self.num_features = cfg.num_features
        else:
            # pre-activation and linear-output blocks leave the last stage un-activated
            final_act = cfg.linear_out or cfg.preact
            self.final_conv = get_act_layer(cfg.act_layer)() if final_act else nn.Identity()
            self.num_features = in_chs
        self.head_hidden_size = self.num_features
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (Bottleneck, PreBottleneck)):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if torch.jit.is_scripting():
            # no getattr by a runtime name in TorchScript: the loop over the children is unrolled and
            # the stages (registered in order, pruned ones deleted) are picked by name
            for name, m in self.named_children():
                if name in self.stage_names:
                    x = m(x)
        else:
            for s in self._feature_stages():
                x = s(x)
        return self.final_conv(x)

    # --- FeatureMixin hooks: level 0 = stem, 1..4 = s1..s4 ------------------------------
    # ``final_conv`` (1x1 conv or activation) is not a norm: ``norm=True`` leaves the maps as they are.
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return x, x

    def _feature_stages(self) -> list[nn.Module]:
        return [getattr(self, n) for n in self.stage_names]

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        for name in self.stage_names[num_stages:]:
            delattr(self, name)
        self.stage_names = self.stage_names[:num_stages]
        self.final_conv = nn.Identity()  # it only feeds the head


def _x(w0: int, wa: float, wm: float, depth: int, group_size: int, **kw: Any) -> Variant:
    return Variant(RegNet, cfg=RegNetCfg(w0=w0, wa=wa, wm=wm, depth=depth, group_size=group_size, **kw))


def _y(w0: int, wa: float, wm: float, depth: int, group_size: int, **kw: Any) -> Variant:
    return _x(w0, wa, wm, depth, group_size, se_ratio=0.25, **kw)


_Z = dict(bottle_ratio=4.0, se_ratio=0.25, downsample=None, linear_out=True, act_layer="silu")

# architecture name -> config; X/Y parameters are the paper's (Y-64/128/256GF from SEER)
VARIANTS: dict[str, Variant] = {
    "regnetx_002": _x(24, 36.44, 2.49, 13, 8),
    "regnetx_004": _x(24, 24.48, 2.54, 22, 16),
    "regnetx_004_tv": _x(24, 24.48, 2.54, 22, 16, tv_rounding=True),
    "regnetx_006": _x(48, 36.97, 2.24, 16, 24),
    "regnetx_008": _x(56, 35.73, 2.28, 16, 16),
    "regnetx_016": _x(80, 34.01, 2.25, 18, 24),
    "regnetx_032": _x(88, 26.31, 2.25, 25, 48),
    "regnetx_040": _x(96, 38.65, 2.43, 23, 40),
    "regnetx_064": _x(184, 60.83, 2.07, 17, 56),
    "regnetx_080": _x(80, 49.56, 2.88, 23, 120),
    "regnetx_120": _x(168, 73.36, 2.37, 19, 112),
    "regnetx_160": _x(216, 55.59, 2.1, 22, 128),
    "regnetx_320": _x(320, 69.86, 2.0, 23, 168),
    "regnety_002": _y(24, 36.44, 2.49, 13, 8),
    "regnety_004": _y(48, 27.89, 2.09, 16, 8),
    "regnety_006": _y(48, 32.54, 2.32, 15, 16),
    "regnety_008": _y(56, 38.84, 2.4, 14, 16),
    "regnety_008_tv": _y(56, 38.84, 2.4, 14, 16, tv_rounding=True),
    "regnety_016": _y(48, 20.71, 2.65, 27, 24),
    "regnety_032": _y(80, 42.63, 2.66, 21, 24),
    "regnety_040": _y(96, 31.41, 2.24, 22, 64),
    "regnety_064": _y(112, 33.22, 2.27, 25, 72),
    "regnety_080": _y(192, 76.82, 2.19, 17, 56),
    "regnety_080_tv": _y(192, 76.82, 2.19, 17, 56, tv_rounding=True),
    "regnety_120": _y(168, 73.36, 2.37, 19, 112),
    "regnety_160": _y(200, 106.23, 2.48, 18, 112),
    "regnety_320": _y(232, 115.89, 2.53, 20, 232),
    "regnety_640": _y(352, 147.48, 2.4, 20, 328),
    "regnety_1280": _y(456, 160.83, 2.52, 27, 264),
    "regnety_2560": _y(640, 230.83, 2.53, 27, 373),
    "regnety_040_sgn": _y(96, 31.41, 2.24, 22, 64, norm_layer="groupnorm", act_layer="silu"),
    "regnetv_040": _y(96, 31.41, 2.24, 22, 64, preact=True, act_layer="silu"),
    "regnetv_064": _y(112, 33.22, 2.27, 25, 72, preact=True, downsample="avg", act_layer="silu"),
    "regnetz_005": _x(16, 10.7, 2.51, 21, 4, num_features=1024, **_Z),
    "regnetz_040": _x(48, 14.5, 2.226, 28, 8, **_Z),
    "regnetz_040_h": _x(48, 14.5, 2.226, 28, 8, num_features=1536, **_Z),
}


register_family("regnet", VARIANTS)
