"""CSPNet (Wang et al., 2020, "CSPNet: A New Backbone that can Enhance Learning Capability of CNN"):
CSPResNet(X), CSPDarkNet, DarkNet, and the YOLOv5-style ``cs3*`` nets.

A *cross-stage partial* stage splits its (expanded) input along the channels into two halves:
only one half runs through the stage's residual blocks, the other half crosses the stage
untouched, and a 1x1 "transition" conv fuses the concatenation. Gradient paths through the two
halves stay separate (no duplicated gradient information), and the blocks see half the width,
which cuts compute by ~20% at equal accuracy.

Stage kinds (``stage_type``):

* ``csp``: ``[conv_down] -> conv_exp -> split (a, b) -> b: blocks -> conv_transition_b ->
  cat(a, b) -> conv_transition`` (CSPResNet / CSPDarkNet);
* ``cs3``: ``[conv_down] -> conv_exp -> split (a, b) -> a: blocks -> cat(a, b) -> conv_transition``
  (the lighter "C3" stage of YOLOv5);
* ``dark``: plain ``conv_down -> blocks`` (DarkNet, no partial split).

Block kinds (``block_type``): ResNet bottleneck (``bottle``), DarkNet ``1x1 -> 3x3`` (``dark``),
and ``3x3 -> 1x1`` (``edge``), each residual, with optional squeeze-excite.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..layers.activations import LayerType, create_act_layer
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import make_divisible
from ..layers.pool import ClassifierHead
from ..layers.squeeze_excite import get_attn
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["CspNet", "CspStage", "CspBottleneck", "CspDarkBlock", "CspEdgeBlock", "VARIANTS"]

PerStage = Union[float, int, str, bool, None, Sequence[Any]]


def _per_stage(value: PerStage, n: int) -> list:
    """A scalar for every stage, or a sequence padded with its last value to ``n`` stages."""
    if isinstance(value, (list, tuple)):
        return list(value[:n]) + [value[-1]] * max(0, n - len(value))
    return [value] * n


def _attn(attn_layer: LayerType, channels: int, act_layer: LayerType, kwargs: dict) -> nn.Module:
    layer = get_attn(attn_layer)
    return layer(channels, act_layer=act_layer, **kwargs) if layer is not None else nn.Identity()


class CspBottleneck(nn.Module):
    """``1x1 -> 3x3 (grouped) [-> SE] -> 1x1 (no act)``, added to the input, then activated."""

    def __init__(self, in_chs: int, out_chs: int, *, bottle_ratio: float, groups: int = 1,
                 act_layer: LayerType = "leaky_relu", attn_layer: LayerType = None,
                 attn_kwargs: Optional[dict] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.conv1 = ConvNormAct(in_chs, mid, 1, act_layer=act_layer)
        self.conv2 = ConvNormAct(mid, mid, 3, groups=groups, act_layer=act_layer)
        self.attn2 = _attn(attn_layer, mid, act_layer, attn_kwargs or {})
        self.conv3 = ConvNormAct(mid, out_chs, 1, apply_act=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act3 = create_act_layer(act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.attn2(self.conv2(self.conv1(x))))
        return self.act3(self.drop_path(y) + x)


class CspDarkBlock(nn.Module):
    """DarkNet residual: ``1x1 (reduce) [-> SE] -> 3x3 (restore)`` plus the input."""

    def __init__(self, in_chs: int, out_chs: int, *, bottle_ratio: float, groups: int = 1,
                 act_layer: LayerType = "leaky_relu", attn_layer: LayerType = None,
                 attn_kwargs: Optional[dict] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.conv1 = ConvNormAct(in_chs, mid, 1, act_layer=act_layer)
        self.attn = _attn(attn_layer, mid, act_layer, attn_kwargs or {})
        self.conv2 = ConvNormAct(mid, out_chs, 3, groups=groups, act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.conv2(self.attn(self.conv1(x)))) + x


class CspEdgeBlock(nn.Module):
    """"Edge" residual (EfficientNet-EdgeTPU style): ``3x3 (expand) [-> SE] -> 1x1`` plus the input."""

    def __init__(self, in_chs: int, out_chs: int, *, bottle_ratio: float, groups: int = 1,
                 act_layer: LayerType = "leaky_relu", attn_layer: LayerType = None,
                 attn_kwargs: Optional[dict] = None, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = int(round(out_chs * bottle_ratio))
        self.conv1 = ConvNormAct(in_chs, mid, 3, groups=groups, act_layer=act_layer)
        self.attn = _attn(attn_layer, mid, act_layer, attn_kwargs or {})
        self.conv2 = ConvNormAct(mid, out_chs, 1, act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(self.conv2(self.attn(self.conv1(x)))) + x


_BLOCKS = {"bottle": CspBottleneck, "dark": CspDarkBlock, "edge": CspEdgeBlock}


class CspStage(nn.Module):
    """One stage: optional strided ``conv_down``, then a cross-stage-partial (``csp``/``cs3``) or
    plain (``dark``) body; see the module docstring."""

    def __init__(self, in_chs: int, out_chs: int, *, depth: int, stride: int = 2, stage_type: str = "csp",
                 block_type: str = "bottle", groups: int = 1, block_ratio: float = 1.0, bottle_ratio: float = 1.0,
                 expand_ratio: float = 1.0, avg_down: bool = False, down_growth: bool = False,
                 cross_linear: bool = False, act_layer: LayerType = "leaky_relu", attn_layer: LayerType = None,
                 attn_kwargs: Optional[dict] = None, drop_path_rates: Sequence[float] = ()) -> None:
        super().__init__()
        if stage_type not in ("csp", "cs3", "dark"):
            raise ValueError(f"unknown CSP stage_type {stage_type!r}")
        self.stage_type = stage_type
        self.grad_checkpointing = False
        partial_split = stage_type != "dark"
        down_chs = out_chs if (down_growth or not partial_split) else in_chs
        if stride > 1:
            if avg_down:
                self.conv_down: nn.Module = nn.Sequential(
                    nn.AvgPool2d(2), ConvNormAct(in_chs, down_chs, 1, groups=groups, act_layer=act_layer))
            else:
                self.conv_down = ConvNormAct(in_chs, down_chs, 3, stride=stride, groups=groups, act_layer=act_layer)
            prev = down_chs
        else:
            self.conv_down = nn.Identity()
            prev = in_chs

        block_out = int(round(out_chs * block_ratio))
        self.split_chs = int(round(out_chs * expand_ratio)) // 2 if partial_split else out_chs
        self.conv_exp: nn.Module = nn.Identity()
        if partial_split:
            self.conv_exp = ConvNormAct(prev, 2 * self.split_chs, 1, act_layer=act_layer, apply_act=not cross_linear)
            prev = self.split_chs
        rates = list(drop_path_rates) or [0.0] * depth
        block_cls = _BLOCKS[block_type]
        self.blocks = nn.Sequential(*[
            block_cls(prev if i == 0 else block_out, block_out, bottle_ratio=bottle_ratio, groups=groups,
                      act_layer=act_layer, attn_layer=attn_layer, attn_kwargs=attn_kwargs, drop_path=rates[i])
            for i in range(depth)])
        # (Identity placeholders keep the module scriptable; they hold no weights)
        self.conv_transition_b: nn.Module = nn.Identity()
        self.conv_transition: nn.Module = nn.Identity()
        if stage_type == "csp":
            self.conv_transition_b = ConvNormAct(block_out, self.split_chs, 1, act_layer=act_layer)
        if partial_split:
            self.conv_transition = ConvNormAct(2 * self.split_chs, out_chs, 1, act_layer=act_layer)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_down(x)
        if self.stage_type == "dark":
            return self._blocks(x)
        a, b = self.conv_exp(x).split(self.split_chs, dim=1)
        if self.stage_type == "csp":  # the second half is processed, the first crosses over
            b = self.conv_transition_b(self._blocks(b))
        else:  # cs3: the first half is processed
            a = self._blocks(a)
        return self.conv_transition(torch.cat([a, b], dim=1))


class CspNet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Conv stem (1-3 conv-bn-act, optional max pool) -> :class:`CspStage` s -> pooled classifier."""
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        stem_chs: Union[int, Sequence[int]] = 32,
        stem_kernel: int = 3,
        stem_stride: int = 1,
        stem_padding: Union[int, str] = "",
        stem_pool: bool = False,
        depths: Sequence[int] = (1, 2, 8, 8, 4),
        channels: Sequence[int] = (64, 128, 256, 512, 1024),
        strides: PerStage = 2,
        groups: PerStage = 1,
        block_ratio: PerStage = 1.0,
        bottle_ratio: PerStage = 1.0,
        expand_ratio: PerStage = 1.0,
        stage_type: PerStage = "csp",
        block_type: PerStage = "bottle",
        avg_down: PerStage = False,
        down_growth: PerStage = False,
        cross_linear: PerStage = False,
        attn_layer: PerStage = None,
        attn_kwargs: Optional[dict] = None,
        act_layer: LayerType = "leaky_relu",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        # stem: the first conv takes the stride (and the last one too for a stride-4 stem without pool)
        stem_chs = list(stem_chs) if isinstance(stem_chs, (list, tuple)) else [stem_chs]
        self.stem = nn.Sequential()
        prev, reduction = in_chans, 1
        for i, chs in enumerate(stem_chs):
            last = i == len(stem_chs) - 1
            s = 2 if (i == 0 and stem_stride > 1) or (last and stem_stride > 2 and not stem_pool) else 1
            self.stem.add_module(f"conv{i + 1}", ConvNormAct(prev, chs, stem_kernel, stride=s,
                                                             padding=stem_padding if i == 0 else "",
                                                             act_layer=act_layer))
            prev, reduction = chs, reduction * s
        self._stem_feat = f"conv{len(stem_chs)}"
        self.feature_info: list[dict[str, Any]] = [
            dict(num_chs=prev, reduction=reduction, module=f"stem.{self._stem_feat}")]
        if stem_pool:
            self.stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
            reduction *= 2

        n = len(depths)
        per = {k: _per_stage(v, n) for k, v in dict(
            stride=strides, groups=groups, block_ratio=block_ratio, bottle_ratio=bottle_ratio,
            expand_ratio=expand_ratio, stage_type=stage_type, block_type=block_type, avg_down=avg_down,
            down_growth=down_growth, cross_linear=cross_linear, attn_layer=attn_layer).items()}
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages = []
        for i in range(n):
            args = {k: v[i] for k, v in per.items()}
            stages.append(CspStage(prev, channels[i], depth=depths[i], act_layer=act_layer, attn_kwargs=attn_kwargs,
                                   drop_path_rates=rates[i], **args))
            prev = channels[i]
            reduction *= args["stride"]
            self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    # --- FeatureMixin hooks: level 0 = the last stem conv (before the stem pool), then stages --
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        feat = None
        for name, m in self.stem.named_children():
            x = m(x)
            if name == self._stem_feat:
                feat = x
        return x, feat




# --- variants ------------------------------------------------------------------------------------
_csp_resnet = Variant(CspNet, stem_chs=64, stem_kernel=7, stem_stride=4, stem_pool=True, depths=(3, 3, 5, 2),
                      channels=(128, 256, 512, 1024), strides=(1, 2), expand_ratio=2.0, bottle_ratio=0.5,
                      cross_linear=True)
_deep_stem = dict(stem_chs=(32, 32, 64), stem_kernel=3)
_darknet = Variant(CspNet, stem_chs=32, depths=(1, 2, 8, 8, 4), channels=(64, 128, 256, 512, 1024),
                   bottle_ratio=0.5, stage_type="dark", block_type="dark")


def _cs3(width: float = 1.0, depth: float = 1.0, focus: bool = False, **kw: Any) -> Variant:
    """YOLOv5-style CS3 nets: widths/depths scaled from the "L" model, SiLU, C3 stages."""
    if focus:  # one 6x6 stride-2 conv (the re-parameterised YOLOv5 "Focus" space-to-depth stem)
        stem = dict(stem_chs=make_divisible(64 * width), stem_kernel=6, stem_padding=2)
    else:
        stem = dict(stem_chs=(int(32 * width), int(64 * width)), stem_kernel=3)
    args = dict(stem_stride=2, depths=tuple(int(d * depth) for d in (3, 6, 9, 3)),
                channels=tuple(int(c * width) for c in (128, 256, 512, 1024)), block_ratio=0.5,
                stage_type="cs3", block_type="dark", act_layer="silu")
    args.update(stem)
    args.update(kw)
    return Variant(CspNet, **args)


_se_quarter = dict(attn_layer="se", attn_kwargs=dict(rd_ratio=0.25))

VARIANTS: dict[str, Variant] = {
    "cs3darknet_focus_l": _cs3(focus=True),
    "cs3darknet_focus_m": _cs3(0.75, 0.67, focus=True),
    "cs3darknet_focus_s": _cs3(0.5, 0.5, focus=True),
    "cs3darknet_focus_x": _cs3(1.25, 1.33, focus=True),
    "cs3darknet_l": _cs3(),
    "cs3darknet_m": _cs3(0.75, 0.67),
    "cs3darknet_s": _cs3(0.5, 0.5),
    "cs3darknet_x": _cs3(1.25, 1.33),
    "cs3edgenet_x": _cs3(1.25, 1.33, bottle_ratio=1.5, block_type="edge"),
    "cs3se_edgenet_x": _cs3(1.25, 1.33, bottle_ratio=1.5, block_type="edge", **_se_quarter),
    "cs3sedarknet_l": _cs3(**_se_quarter),
    "cs3sedarknet_x": _cs3(1.25, 1.33, attn_layer="se"),
    "cs3sedarknet_xdw": Variant(CspNet, stem_chs=(32, 64), stem_kernel=3, stem_stride=2, depths=(3, 6, 12, 4),
                                channels=(256, 512, 1024, 2048), groups=(1, 1, 256, 512), bottle_ratio=0.5,
                                block_ratio=0.5, attn_layer="se", act_layer="silu"),
    "cspdarknet53": _darknet.but(expand_ratio=(2.0, 1.0), bottle_ratio=(0.5, 1.0), block_ratio=(1.0, 0.5),
                                 down_growth=True, stage_type="csp"),
    "cspresnet50": _csp_resnet,
    "cspresnet50d": _csp_resnet.but(**_deep_stem),
    "cspresnet50w": _csp_resnet.but(**_deep_stem, channels=(256, 512, 1024, 2048), expand_ratio=1.0,
                                    bottle_ratio=0.25, block_ratio=0.5),
    "cspresnext50": _csp_resnet.but(channels=(256, 512, 1024, 2048), groups=32, expand_ratio=1.0, bottle_ratio=1.0,
                                    block_ratio=0.5),
    "darknet17": _darknet.but(depths=(1, 1, 1, 1, 1)),
    "darknet21": _darknet.but(depths=(1, 1, 1, 2, 2)),
    "sedarknet21": _darknet.but(depths=(1, 1, 1, 2, 2), attn_layer="se"),
    "darknet53": _darknet,
    "darknetaa53": _darknet.but(avg_down=True),
}

register_family("cspnet", VARIANTS)
