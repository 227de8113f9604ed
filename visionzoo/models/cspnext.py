"""CSPNeXt, the backbone of RTMDet (Lyu et al., 2022, "RTMDet: An Empirical Study of Designing
Real-Time Object Detectors"), as an ImageNet classifier.

A CSPNet-style design (see ``cspnet``) tuned for detection: every stage is a stride-2 3x3
conv, (last stage) an SPP block, and a cross-stage-partial layer. The CSP layer projects its
input twice with 1x1 convs (``main_conv`` / ``short_conv``); only the main branch runs the
blocks, the short branch crosses over; the concatenation is re-weighted per channel (a single
1x1 conv + hard-sigmoid gate, effective-SE style) and fused by ``final_conv``. Blocks are
``3x3 conv -> depthwise-separable 5x5`` with a residual (no residual in the last stage).
Widths and depths scale from the "L" model by ``widen`` / ``deepen`` factors.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import ClassifierHead
from ..layers.squeeze_excite import EffectiveSEModule
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["CSPNeXt", "CSPNeXtBlock", "CSPNeXtLayer", "SPPBottleneck", "VARIANTS"]


class _DepthwiseSeparable(nn.Module):
    """``depthwise_conv`` (kxk, one filter per channel) then ``pointwise_conv`` (1x1), each conv-bn-act."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, conv: Any) -> None:
        super().__init__()
        self.depthwise_conv = conv(in_chs, in_chs, kernel_size, groups=in_chs)
        self.pointwise_conv = conv(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """``3x3 conv -> depthwise-separable 5x5`` with an optional identity shortcut."""

    def __init__(self, chs: int, *, residual: bool, conv: Any, kernel_size: int = 5, drop_path: float = 0.0) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = conv(chs, chs, 3)
        self.conv2 = _DepthwiseSeparable(chs, chs, kernel_size, conv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop_path(self.conv2(self.conv1(x)))
        return y + x if self.residual else y


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (He et al., 2014; YOLO "SPP"): halve the width, concatenate the map
    with its stride-1 max pools of several sizes, fuse with a 1x1 conv."""

    def __init__(self, in_chs: int, out_chs: int, conv: Any, pool_sizes: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        mid = in_chs // 2
        self.conv1 = conv(in_chs, mid, 1)
        self.pool_sizes = tuple(pool_sizes)
        self.conv2 = conv(mid * (len(self.pool_sizes) + 1), out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        pooled = [nn.functional.max_pool2d(x, k, stride=1, padding=k // 2) for k in self.pool_sizes]
        return self.conv2(torch.cat([x] + pooled, dim=1))


class CSPNeXtLayer(nn.Module):
    """The cross-stage-partial layer: blocks on the ``main_conv`` branch only, ``short_conv`` crosses
    over, channel attention on the concatenation, ``final_conv`` fuses."""

    def __init__(self, in_chs: int, out_chs: int, *, depth: int, residual: bool, conv: Any,
                 expand_ratio: float = 0.5, channel_attention: bool = True,
                 drop_path_rates: Sequence[float] = ()) -> None:
        super().__init__()
        self.grad_checkpointing = False
        mid = int(out_chs * expand_ratio)
        rates = list(drop_path_rates) or [0.0] * depth
        self.short_conv = conv(in_chs, mid, 1)
        self.main_conv = conv(in_chs, mid, 1)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, residual=residual, conv=conv, drop_path=rates[i])
                                      for i in range(depth)])
        self.attention = EffectiveSEModule(2 * mid) if channel_attention else nn.Identity()
        self.final_conv = conv(2 * mid, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.main_conv(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            main = checkpoint_seq(self.blocks, main)
        else:
            main = self.blocks(main)
        return self.final_conv(self.attention(torch.cat([main, self.short_conv(x)], dim=1)))


class CSPNeXt(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Three-conv stem -> four ``[stride-2 conv, (SPP), CSP layer]`` stages -> pooled classifier."""
    feature_cfg = {"feature_cls": "getter"}

    # (in, out, blocks, residual, spp) of the "L" (1.0 / 1.0) model, the RTMDet "P5" layout
    _P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 1024, 3, False, True))

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        widen: float = 1.0,
        deepen: float = 1.0,
        expand_ratio: float = 0.5,
        channel_attention: bool = True,
        act_layer: LayerType = "silu",
        bn_eps: float = 1e-5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        conv = partial(ConvNormAct, act_layer=act_layer, norm_kwargs=dict(eps=bn_eps))

        stem_out = int(self._P5[0][0] * widen)
        stem_mid = int(self._P5[0][0] * widen // 2)
        self.stem = nn.Sequential(conv(in_chans, stem_mid, 3, stride=2), conv(stem_mid, stem_mid, 3),
                                  conv(stem_mid, stem_out, 3))
        self.feature_info: list[dict[str, Any]] = [dict(num_chs=stem_out, reduction=2, module="stem")]
        depths = [max(round(n * deepen), 1) for _, _, n, _, _ in self._P5]
        rates = drop_path_rates(drop_path_rate, depths)
        stages, reduction = [], 2
        for i, (cin, cout, _, residual, spp) in enumerate(self._P5):
            cin, cout = int(cin * widen), int(cout * widen)
            parts: list[nn.Module] = [conv(cin, cout, 3, stride=2)]
            if spp:
                parts.append(SPPBottleneck(cout, cout, conv))
            parts.append(CSPNeXtLayer(cout, cout, depth=depths[i], residual=residual, conv=conv,
                                      expand_ratio=expand_ratio, channel_attention=channel_attention,
                                      drop_path_rates=rates[i]))
            stages.append(nn.Sequential(*parts))
            reduction *= 2
            self.feature_info.append(dict(num_chs=cout, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = int(self._P5[-1][1] * widen)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    # --- FeatureMixin hooks: the stem output, then each stage ------------------------------------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.stem(x)
        return x, x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage[-1].grad_checkpointing = enable



_L = Variant(CSPNeXt)
VARIANTS: dict[str, Variant] = {
    "cspnext_l": _L,
    "cspnext_m": _L.but(widen=0.75, deepen=0.67),
    "cspnext_s": _L.but(widen=0.5, deepen=0.33),
    "cspnext_tiny": _L.but(widen=0.375, deepen=0.167),
    "cspnext_x": _L.but(widen=1.25, deepen=1.33),
}

register_family("cspnext", VARIANTS)
