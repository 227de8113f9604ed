"""PP-LCNetV2 (PaddleClas, 2022): a CPU-friendly network of depthwise-separable blocks.

Every block is a depthwise conv followed by a pointwise conv. In the last two stages the depthwise
conv is "re-parameterisable": it is trained as the sum of parallel depthwise conv+BN branches of
kernels ``k, k-2, ..., 1`` (the 1x1 branch only where the stride is 1), then ReLU; for inference
:meth:`LCNetV2.reparameterize` folds the branches into one ``k x k`` depthwise conv. The third stage
adds a squeeze-excite gate and splits its pointwise conv in two (to half the output width, then to
the full width); the fourth stage's stride-1 blocks are residual. A pooled 1x1-conv head (1280
wide, ReLU) sits before the classifier.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..layers.conv_head import PooledConvHeadMixin
from ..layers.conv_norm_act import ConvNormAct
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.helpers import make_divisible
from ..layers.squeeze_excite import SEModule
from .base import FeatureMixin, Variant, register_family
from .ghostnet import _pad_to, fuse_conv_bn

__all__ = ["LCNetV2", "RepDepthwiseSeparable", "VARIANTS"]

# stage input width, depthwise kernel, split pointwise, re-parameterisable dw, SE, residual
_STAGES = (
    (64, 3, False, False, False, False),
    (128, 3, False, False, False, False),
    (256, 5, True, True, True, False),
    (512, 5, False, True, False, True),
)


class RepDepthwiseSeparable(nn.Module):
    """Depthwise conv (plain conv+BN+ReLU, or a sum of conv+BN branches then ReLU) -> optional SE
    -> pointwise conv+BN+ReLU (optionally split in two) -> optional residual add."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, dw_size: int = 3, split_pw: bool = False,
                 use_rep: bool = False, use_se: bool = False, use_shortcut: bool = False) -> None:
        super().__init__()
        self.use_rep = use_rep
        self.fused = False
        self.has_shortcut = use_shortcut and stride == 1 and in_chs == out_chs
        self.in_chs, self.dw_size, self.stride = in_chs, dw_size, stride
        if use_rep:
            self.dw_conv_list = nn.ModuleList([
                ConvNormAct(in_chs, in_chs, k, stride, padding=(k - 1) // 2, groups=in_chs, apply_act=False)
                for k in range(dw_size, 0, -2) if k > 1 or stride == 1])
            self.dw_conv: nn.Module = nn.Identity()  # the fused conv, after reparameterize()
        else:
            self.dw_conv_list = nn.ModuleList()  # (no branches; keeps the scripted forward typed)
            self.dw_conv = ConvNormAct(in_chs, in_chs, dw_size, stride, padding=(dw_size - 1) // 2, groups=in_chs)
        self.act = nn.ReLU(inplace=False)
        self.se = SEModule(in_chs, rd_ratio=0.25, rd_divisor=1, gate_layer="sigmoid") if use_se else nn.Identity()
        if split_pw:
            mid = int(out_chs * 0.5)
            self.pw_conv = nn.Sequential(ConvNormAct(in_chs, mid, 1), ConvNormAct(mid, out_chs, 1))
        else:
            self.pw_conv = ConvNormAct(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if not self.use_rep:
            x = self.dw_conv(x)
        elif self.fused:
            x = self.act(self.dw_conv(x))
        else:
            y = x
            for i, branch in enumerate(self.dw_conv_list):
                y = branch(x) if i == 0 else y + branch(x)
            x = self.act(y)
        x = self.pw_conv(self.se(x))
        if self.has_shortcut:
            x = x + shortcut
        return x

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the depthwise conv+BN branches into one ``k x k`` depthwise conv with bias."""
        if not self.use_rep or self.fused:
            return
        weight: Optional[torch.Tensor] = None
        bias: Optional[torch.Tensor] = None
        for branch in self.dw_conv_list:
            w, b = fuse_conv_bn(branch.conv.weight, branch.bn)
            w = _pad_to(w, self.dw_size)
            weight, bias = (w, b) if weight is None else (weight + w, bias + b)
        k = self.dw_size
        conv = nn.Conv2d(self.in_chs, self.in_chs, k, self.stride, (k - 1) // 2, groups=self.in_chs, bias=True,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.dw_conv = conv
        self.dw_conv_list = nn.ModuleList()
        self.fused = True


class LCNetV2(FeatureMixin, PooledConvHeadMixin, nn.Module):
    """PP-LCNetV2: a 3x3 stride-2 conv and a depthwise-separable block as stem, four stages
    (depths ``(2, 2, 6, 2)``, each starting at stride 2 and doubling the width), then a pooled
    1x1-conv head and the classifier.

    Args:
        scale: width multiplier (widths rounded to multiples of 8).
        depths: blocks per stage.
        head_chs: width of the 1x1 conv after pooling.
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)
    _stem_level = False

    def __init__(self, *, scale: float = 1.0, depths: tuple[int, ...] = (2, 2, 6, 2), head_chs: int = 1280,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"LCNetV2 supports output_stride=32 only, got {output_stride}")
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        stem_chs = make_divisible(32 * scale)
        in_chs = make_divisible(64 * scale)
        self.stem = nn.Sequential(
            ConvNormAct(in_chans, stem_chs, 3, 2, padding=1),
            RepDepthwiseSeparable(stem_chs, in_chs, 1, 3),
        )
        stages = []
        self.feature_info = []
        reduction = 2
        for i, ((base, k, split_pw, rep, se, short), depth) in enumerate(zip(_STAGES, depths)):
            out_chs = make_divisible(base * 2 * scale)
            blocks = []
            for d in range(depth):
                blocks.append(RepDepthwiseSeparable(in_chs, out_chs, 2 if d == 0 else 1, k, split_pw=split_pw,
                                                    use_rep=rep, use_se=se, use_shortcut=short))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
            reduction *= 2
            self.feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        self._init_conv_head(in_chs, head_chs, num_classes, global_pool)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_module(stage, x)
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    @torch.no_grad()
    def reparameterize(self) -> "LCNetV2":
        """Fold every re-parameterisable depthwise conv into one conv (inference form)."""
        for m in list(self.modules()):
            if isinstance(m, RepDepthwiseSeparable):
                m.reparameterize()
        return self


_base = Variant(LCNetV2, scale=1.0)
VARIANTS: dict[str, Variant] = {
    "lcnetv2_small": _base.but(scale=0.75, depths=(2, 2, 4, 2)),
    "lcnetv2_base": _base,
    "lcnetv2_large": _base.but(scale=1.25, depths=(2, 2, 8, 2)),
}
register_family("lcnetv2", VARIANTS)
