"""VoVNet: "An Energy and GPU-Computation Efficient Backbone Network for Real-Time Object Detection"
(Lee et al., 2019, https://arxiv.org/abs/1904.09730) and VoVNetV2 from "CenterMask: Real-Time
Anchor-Free Instance Segmentation" (Lee & Park, 2020, https://arxiv.org/abs/1911.06667).

The One-Shot Aggregation (OSA) module runs a chain of 3x3 convs and concatenates the input and
every intermediate output once, at the end, followed by a 1x1 conv. VoVNetV2 (``b`` variants) adds
an identity shortcut and effective squeeze-excitation (eSE) channel attention; ``dw`` variants use
depthwise-separable convs, ``slim`` variants narrower widths, ``evos`` EvoNorm-S0 instead of BN-ReLU.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.norm_act import EvoNorm2dS0
from ..layers.pool import ClassifierHead
from ..layers.separable_conv import SeparableConvNormAct
from ..layers.squeeze_excite import create_attn
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["VovNet", "VovNetCfg", "VARIANTS"]


class OsaBlock(nn.Module):
    """One-Shot Aggregation: ``layer_per_block`` chained convs, one concat with the input, 1x1 conv.

    With ``depthwise`` the chain starts with a 1x1 ``conv_reduction`` to ``mid_chs`` (when widths
    differ). ``attn`` (eSE/ECA) reweights the aggregated channels; ``residual`` adds the input back
    when the widths match.
    """

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, layer_per_block: int, residual: bool = False,
                 depthwise: bool = False, attn: str = "", norm_act: dict[str, Any] | None = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        conv_layer = partial(ConvNormAct, **(norm_act or {}))
        mid_layer = partial(SeparableConvNormAct, **(norm_act or {})) if depthwise else conv_layer
        self.residual = residual and in_chs == out_chs
        next_chs = in_chs
        if depthwise and next_chs != mid_chs:
            self.conv_reduction = conv_layer(next_chs, mid_chs, 1)
            next_chs = mid_chs
        else:
            self.conv_reduction = None
        mid = []
        for _ in range(layer_per_block):
            mid.append(mid_layer(next_chs, mid_chs, 3))
            next_chs = mid_chs
        self.conv_mid = nn.Sequential(*mid)
        self.conv_concat = conv_layer(in_chs + layer_per_block * mid_chs, out_chs, 1)
        self.attn = create_attn(attn, out_chs) if attn else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = self.conv_reduction(x) if self.conv_reduction is not None else x
        for conv in self.conv_mid:
            y = conv(y)
            outputs.append(y)
        y = self.attn(self.conv_concat(torch.cat(outputs, dim=1)))
        if self.residual:
            y = self.drop_path(y) + x
        return y


class OsaStage(nn.Module):
    """Optional 3x3/2 max pool (ceil mode) then ``block_per_stage`` OSA blocks; attention on the last."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, block_per_stage: int, layer_per_block: int,
                 downsample: bool = True, residual: bool = True, depthwise: bool = False, attn: str = "ese",
                 norm_act: dict[str, Any] | None = None, drop_path_rates: Sequence[float] = ()) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True) if downsample else None
        blocks = []
        for i in range(block_per_stage):
            last = i == block_per_stage - 1
            dpr = drop_path_rates[i] if drop_path_rates else 0.0
            blocks.append(OsaBlock(in_chs if i == 0 else out_chs, mid_chs, out_chs, layer_per_block,
                                   residual=residual and i > 0, depthwise=depthwise, attn=attn if last else "",
                                   norm_act=norm_act, drop_path=dpr))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = self.pool(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


@dataclass(frozen=True)
class VovNetCfg:
    """Widths and depths of a VoVNet; ``stem_chs`` are the three stem convs' widths."""

    stem_chs: tuple[int, ...] = (64, 64, 128)
    stage_conv_chs: tuple[int, ...] = (128, 160, 192, 224)
    stage_out_chs: tuple[int, ...] = (256, 512, 768, 1024)
    layer_per_block: int = 5
    block_per_stage: tuple[int, ...] = (1, 1, 2, 2)
    residual: bool = True
    depthwise: bool = False
    attn: str = "ese"
    norm_layer: str = "batchnorm"


_NORM_ACT_LAYERS: dict[str, dict[str, Any]] = {
    "batchnorm": dict(norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU),
    "evonorms0": dict(norm_layer=EvoNorm2dS0, act_layer=None),  # the nonlinearity is part of the norm
}


class VovNet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """VoVNet(V2): 3-conv stem (reduction 4), then four OSA stages (reductions 4 to 32)."""
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        cfg: VovNetCfg,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
        act_layer: LayerType = None,
    ) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"VovNet supports output_stride=32 only, got {output_stride}")
        if cfg.norm_layer not in _NORM_ACT_LAYERS:
            raise ValueError(f"unknown norm_layer {cfg.norm_layer!r}; known: {', '.join(_NORM_ACT_LAYERS)}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        norm_act = dict(_NORM_ACT_LAYERS[cfg.norm_layer])
        if act_layer is not None and norm_act["act_layer"] is not None:
            norm_act["act_layer"] = act_layer
        conv_layer = partial(ConvNormAct, **norm_act)

        stem_stride = 4
        s0, s1, s2 = cfg.stem_chs
        stem_mid = partial(SeparableConvNormAct, **norm_act) if cfg.depthwise else conv_layer
        self.stem = nn.Sequential(
            conv_layer(in_chans, s0, 3, stride=2),
            stem_mid(s0, s1, 3, stride=1),
            stem_mid(s1, s2, 3, stride=2),
        )
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=s1, reduction=2, module="stem.1")]

        dprs = drop_path_rates(drop_path_rate, list(cfg.block_per_stage))
        in_chs, reduction = s2, stem_stride
        stages = []
        for i, (mid, out, n) in enumerate(zip(cfg.stage_conv_chs, cfg.stage_out_chs, cfg.block_per_stage)):
            downsample = i > 0
            stages.append(OsaStage(in_chs, mid, out, n, cfg.layer_per_block, downsample=downsample,
                                   residual=cfg.residual, depthwise=cfg.depthwise, attn=cfg.attn,
                                   norm_act=norm_act, drop_path_rates=dprs[i]))
            in_chs = out
            reduction *= 2 if downsample else 1
            self.feature_info.append(dict(num_chs=out, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    # --- FeatureMixin hooks: level 0 = second stem conv (stride 2), 1..4 = stages --------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem[1](self.stem[0](x))
        return x, x

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if index == 0 and len(self.stem) > 2:  # the last (strided) stem conv only feeds the stages
            x = self.stem[2](x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if num_stages == 0:
            self.stem = self.stem[:2]


_SLIM = dict(stage_conv_chs=(64, 80, 96, 112), stage_out_chs=(112, 256, 384, 512))

# architecture name -> config
def _v(**cfg: Any) -> Variant:
    return Variant(VovNet, cfg=VovNetCfg(**cfg))


VARIANTS: dict[str, Variant] = {
    "vovnet39a": _v(residual=False, attn=""),
    "vovnet57a": _v(block_per_stage=(1, 1, 4, 3), residual=False, attn=""),
    "ese_vovnet19b_slim_dw": _v(stem_chs=(64, 64, 64), layer_per_block=3, block_per_stage=(1, 1, 1, 1),
                                       depthwise=True, **_SLIM),
    "ese_vovnet19b_dw": _v(stem_chs=(64, 64, 64), layer_per_block=3, block_per_stage=(1, 1, 1, 1),
                                  depthwise=True),
    "ese_vovnet19b_slim": _v(layer_per_block=3, block_per_stage=(1, 1, 1, 1), **_SLIM),
    "ese_vovnet39b": _v(),
    "ese_vovnet57b": _v(block_per_stage=(1, 1, 4, 3)),
    "ese_vovnet99b": _v(block_per_stage=(1, 3, 9, 3)),
    "eca_vovnet39b": _v(attn="eca"),
    "ese_vovnet39b_evos": _v(norm_layer="evonorms0"),
}


register_family("vovnet", VARIANTS)
