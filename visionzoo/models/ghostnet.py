"""GhostNet v1 (Han et al., 2020, https://arxiv.org/abs/1911.11907), v2 (Tang et al., 2022,
https://arxiv.org/abs/2211.12905) and v3 (Liu et al., 2024, https://arxiv.org/abs/2404.11202).

A Ghost module makes half of its output with an ordinary 1x1 conv ("intrinsic" maps) and the other
half from those maps with a cheap depthwise conv ("ghost" maps). A Ghost bottleneck stacks two
modules (expand, project) around an optional strided depthwise conv and SE.
v2 multiplies the expanding module's output by a "DFC" attention gate: a 1x1 conv followed by
horizontal (1x5) and vertical (5x1) depthwise convs, computed at half resolution and upsampled.
v3 trains every conv as a sum of parallel conv+BN branches (and a BN identity / 1x1 scale branch,
MobileOne style); :meth:`reparameterize` folds them into single convs for inference.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath
from ..layers.helpers import make_divisible
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, Variant, register_family
from ._mobile_blocks import SqueezeExcite

__all__ = ["GhostNet", "GhostModule", "GhostBottleneck", "ConvBn", "RepBranches", "fuse_conv_bn", "VARIANTS"]

# k, mid (expansion width), out, se ratio, stride; one row per block, one list per stage
_CFG = (
    ((3, 16, 16, 0, 1),),
    ((3, 48, 24, 0, 2),),
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),
    ((3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)),
)


def fuse_conv_bn(conv_weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` as one conv (``conv`` without bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv_weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _identity_kernel(chs: int, groups: int, kernel: int, like: torch.Tensor) -> torch.Tensor:
    """The kernel of the identity map as a (grouped) ``kernel x kernel`` conv."""
    w = torch.zeros(chs, chs // groups, kernel, kernel, dtype=like.dtype, device=like.device)
    idx = torch.arange(chs, device=like.device)
    w[idx, idx % (chs // groups), kernel // 2, kernel // 2] = 1.0
    return w


def _pad_to(w: torch.Tensor, kernel: int) -> torch.Tensor:
    p = (kernel - w.shape[-1]) // 2
    return F.pad(w, [p, p, p, p]) if p else w


class ConvBn(nn.Module):
    """``conv`` (no bias) -> ``bn1`` -> optional activation (keys ``conv``/``bn1``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class RepBranches:
    """A (grouped) ``k x k`` conv + BN trained as the sum of ``num_branches`` conv+BN branches, a 1x1
    conv+BN "scale" branch (``k > 1``) and a BN identity branch (when shapes allow), GhostNetV3's
    training-time form. The branches are registered on ``owner`` as ``<prefix>_rpr_skip``,
    ``<prefix>_rpr_conv``, ``<prefix>_rpr_scale`` (the published layout); :meth:`fuse` replaces them
    by one conv with bias, ``<prefix>_reparam``."""

    def __init__(self, owner: nn.Module, prefix: str, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, num_branches: int = 3, skip: bool = True) -> None:
        self.prefix, self.in_chs, self.out_chs = prefix, in_chs, out_chs
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        has_skip = skip and in_chs == out_chs and stride == 1
        # registration order (= state_dict order) is skip, branches, scale
        setattr(owner, f"{prefix}_rpr_skip", nn.BatchNorm2d(in_chs) if has_skip else None)
        setattr(owner, f"{prefix}_rpr_conv", nn.ModuleList(
            [ConvBn(in_chs, out_chs, kernel_size, stride, groups) for _ in range(num_branches)]))
        setattr(owner, f"{prefix}_rpr_scale", ConvBn(in_chs, out_chs, 1, stride, groups) if kernel_size > 1 else None)
        setattr(owner, f"{prefix}_reparam", None)

    def _parts(self, owner: nn.Module) -> tuple:
        p = self.prefix
        return getattr(owner, f"{p}_rpr_skip"), getattr(owner, f"{p}_rpr_conv"), getattr(owner, f"{p}_rpr_scale")

    def __call__(self, owner: nn.Module, x: torch.Tensor) -> torch.Tensor:
        fused = getattr(owner, f"{self.prefix}_reparam")
        if fused is not None:
            return fused(x)
        skip, convs, scale = self._parts(owner)
        out = convs[0](x)
        for c in convs[1:]:
            out = out + c(x)
        if scale is not None:
            out = out + scale(x)
        if skip is not None:
            out = out + skip(x)
        return out

    @torch.no_grad()
    def fuse(self, owner: nn.Module) -> None:
        """Fold every branch (and its BN) into one conv with bias."""
        if getattr(owner, f"{self.prefix}_reparam") is not None:
            return
        skip, convs, scale = self._parts(owner)
        k = self.kernel_size
        weight, bias = fuse_conv_bn(convs[0].conv.weight, convs[0].bn1)
        for c in convs[1:]:
            w, b = fuse_conv_bn(c.conv.weight, c.bn1)
            weight, bias = weight + w, bias + b
        if scale is not None:
            w, b = fuse_conv_bn(scale.conv.weight, scale.bn1)
            weight, bias = weight + _pad_to(w, k), bias + b
        if skip is not None:
            w, b = fuse_conv_bn(_identity_kernel(self.in_chs, self.groups, k, weight), skip)
            weight, bias = weight + w, bias + b
        conv = nn.Conv2d(self.in_chs, self.out_chs, k, self.stride, (k - 1) // 2, groups=self.groups, bias=True,
                         device=weight.device, dtype=weight.dtype)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        p = self.prefix
        for name in (f"{p}_rpr_skip", f"{p}_rpr_conv", f"{p}_rpr_scale"):
            setattr(owner, name, None)
        setattr(owner, f"{p}_reparam", conv)


class GhostModule(nn.Module):
    """``out_chs`` maps: ``ceil(out/2)`` from a 1x1 conv, the rest from a cheap 3x3 depthwise conv
    of those. ``attn``: multiply by the DFC attention gate (v2). ``rep``: GhostNetV3 branches."""

    def __init__(self, in_chs: int, out_chs: int, *, use_act: bool = True, attn: bool = False,
                 rep: bool = False, dw_size: int = 3) -> None:
        super().__init__()
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / 2)
        new_chs = init_chs
        self.rep = rep
        if rep:
            self._primary = RepBranches(self, "primary", in_chs, init_chs, 1, skip=False)
            self._cheap = RepBranches(self, "cheap", init_chs, new_chs, dw_size, groups=init_chs)
            self.act = nn.ReLU(inplace=False) if use_act else nn.Identity()
        else:
            self.primary_conv = nn.Sequential(
                nn.Conv2d(in_chs, init_chs, 1, bias=False), nn.BatchNorm2d(init_chs),
                nn.ReLU(inplace=True) if use_act else nn.Identity())
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(init_chs, new_chs, dw_size, 1, dw_size // 2, groups=init_chs, bias=False),
                nn.BatchNorm2d(new_chs), nn.ReLU(inplace=True) if use_act else nn.Identity())
        if attn:
            self.short_conv: Optional[nn.Module] = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs),
                nn.Conv2d(out_chs, out_chs, (1, 5), padding=(0, 2), groups=out_chs, bias=False),
                nn.BatchNorm2d(out_chs),
                nn.Conv2d(out_chs, out_chs, (5, 1), padding=(2, 0), groups=out_chs, bias=False),
                nn.BatchNorm2d(out_chs))
        else:
            self.short_conv = None

    def reparameterize(self) -> None:
        """Fold the v3 training branches into one conv each (a no-op for v1/v2)."""
        if self.rep:
            self._primary.fuse(self)
            self._cheap.fuse(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rep:
            x1 = self.act(self._primary(self, x))
            x2 = self.act(self._cheap(self, x1))
        else:
            x1 = self.primary_conv(x)
            x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)[:, :self.out_chs]
        if self.short_conv is not None:
            gate = self.short_conv(F.avg_pool2d(x, kernel_size=2, stride=2))
            out = out * F.interpolate(torch.sigmoid(gate), size=out.shape[-2:], mode="nearest")
        return out


class GhostBottleneck(nn.Module):
    """Ghost module (expand, ReLU) -> [strided depthwise conv] -> [SE] -> Ghost module (project),
    plus a shortcut (identity, or depthwise + 1x1 conv when the shape changes)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, *, kernel_size: int = 3, stride: int = 1,
                 se_ratio: float = 0.0, attn: bool = False, rep: bool = False, drop_path: float = 0.0,
                 ghost_module: Optional[type] = None) -> None:
        super().__init__()
        self.stride = stride
        self.rep = rep
        if ghost_module is not None:  # another Ghost-module design (RepGhost), taking (in, out, use_act=)
            self.ghost1 = ghost_module(in_chs, mid_chs, use_act=True)
        else:
            self.ghost1 = GhostModule(in_chs, mid_chs, use_act=True, attn=attn, rep=rep)
        if stride > 1:
            if rep:
                self._dw = RepBranches(self, "dw", mid_chs, mid_chs, kernel_size, stride, groups=mid_chs)
            else:
                self.conv_dw = nn.Conv2d(mid_chs, mid_chs, kernel_size, stride, (kernel_size - 1) // 2,
                                         groups=mid_chs, bias=False)
                self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = (SqueezeExcite(mid_chs, make_divisible(mid_chs * se_ratio, 4), gate_layer="hard_sigmoid")
                   if se_ratio else None)
        self.ghost2 = (ghost_module(mid_chs, out_chs, use_act=False) if ghost_module is not None
                       else GhostModule(mid_chs, out_chs, use_act=False, rep=rep))
        if in_chs == out_chs and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, kernel_size, stride, (kernel_size - 1) // 2, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def reparameterize(self) -> None:
        """Fold the v3 depthwise conv's training branches into one conv (a no-op for v1/v2)."""
        if self.rep and self.stride > 1:
            self._dw.fuse(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.ghost1(x)
        if self.stride > 1:
            x = self._dw(self, x) if self.rep else self.bn_dw(self.conv_dw(x))
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        return self.drop_path(x) + self.shortcut(shortcut)


class GhostNet(FeatureMixin, nn.Module):
    """GhostNet: 3x3 stem, nine stages of Ghost bottlenecks, a 1x1 conv, then MobileNetV3's pooled
    1x1-conv head (``conv_head`` 1280 wide, ReLU) and the classifier.

    Args:
        width: width multiplier (widths rounded to multiples of 4).
        version: 1, 2 (DFC attention in every expanding Ghost module after the second block) or
            3 (v2 plus re-parameterisable training branches).
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, width: float = 1.0, version: int = 1, cfg: tuple = _CFG, head_chs: int = 1280,
                 ghost_module: Optional[type] = None, final_mult: float = 1.0,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", output_stride: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"GhostNet supports output_stride=32 only, got {output_stride}")
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        stem = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = nn.ReLU(inplace=True)
        self.feature_info = [dict(num_chs=stem, reduction=2, module="conv_stem")]
        self._positions = [-1]
        total = sum(len(s) for s in cfg)
        stages: list[nn.Module] = []
        in_chs, reduction, layer_id = stem, 2, 0
        for si, stage in enumerate(cfg):
            blocks = []
            for k, exp, c, se, s in stage:
                out_chs, mid_chs = make_divisible(c * width, 4), make_divisible(exp * width, 4)
                blocks.append(GhostBottleneck(in_chs, mid_chs, out_chs, kernel_size=k, stride=s, se_ratio=se,
                                              attn=version > 1 and layer_id > 1, rep=version == 3,
                                              drop_path=drop_path_rate * layer_id / total,
                                              ghost_module=ghost_module))
                in_chs = out_chs
                layer_id += 1
            stages.append(nn.Sequential(*blocks))
            if stage[0][4] > 1:
                reduction *= stage[0][4]
                self.feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"blocks.{si}"))
                self._positions.append(si)
        self.num_features = make_divisible(cfg[-1][-1][1] * width * final_mult, 4)
        stages.append(nn.Sequential(ConvBn(in_chs, self.num_features, 1, act=True)))
        self.blocks = nn.Sequential(*stages)
        self.head_hidden_size = head_chs
        self.global_pool = SelectAdaptivePool2d(global_pool)
        self.conv_head = nn.Conv2d(self.num_features, head_chs, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(head_chs, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool)
            self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.classifier = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        for i, stage in enumerate(self.blocks):
            x = self._run_stage(i, stage, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.flatten(self.act2(self.conv_head(self.global_pool(x))))
        if pre_logits:
            return x
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def reparameterize(self) -> "GhostNet":
        """Fold every re-parameterisable conv (v3) into one conv; a no-op for v1/v2."""
        for m in list(self.modules()):
            if m is not self and callable(getattr(m, "reparameterize", None)):
                m.reparameterize()
        return self

    # --- FeatureMixin hooks: the stem map is the stem conv's output (before its norm) ----------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        s = self.conv_stem(x)
        return self.act1(self.bn1(s)), s

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _level_positions(self) -> list[int]:
        return [p for p in self._positions if p < len(self.blocks)]

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            from ..layers.grad_checkpoint import checkpoint_module
            return checkpoint_module(stage, x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]

    def _prune_head(self) -> None:
        self.conv_head, self.act2 = nn.Identity(), nn.Identity()
        self.head_hidden_size = self.num_features
        self.reset_classifier(0, "")


_v1, _v2, _v3 = Variant(GhostNet), Variant(GhostNet, version=2), Variant(GhostNet, version=3)
VARIANTS: dict[str, Variant] = {
    "ghostnet_050": _v1.but(width=0.5),
    "ghostnet_100": _v1,
    "ghostnet_130": _v1.but(width=1.3),
    "ghostnetv2_100": _v2,
    "ghostnetv2_130": _v2.but(width=1.3),
    "ghostnetv2_160": _v2.but(width=1.6),
    "ghostnetv3_050": _v3.but(width=0.5),
    "ghostnetv3_100": _v3,
    "ghostnetv3_130": _v3.but(width=1.3),
    "ghostnetv3_160": _v3.but(width=1.6),
}

register_family("ghostnet", VARIANTS)
