"""Deep Layer Aggregation (Yu et al., 2018, "Deep Layer Aggregation").

DLA merges features across depth with trees instead of plain residual stacks. A stem
(``base_layer``, 7x7 conv) and two conv levels (``level0``, ``level1``) are followed by four
aggregation trees (``level2``..``level5``), each halving the resolution:

* a tree of depth 1 runs two residual blocks and fuses both outputs in a ``root`` node
  (1x1 conv + norm + ReLU over their concatenation, optionally residual on the last block);
* a tree of depth ``d`` is two trees of depth ``d - 1``; the second one's root also receives the
  first one's output (iterative aggregation);
* in the top tree of a level (``level_root``) the max-pooled input joins the deepest root too
  (hierarchical aggregation across levels).

Blocks: basic (DLA-34), bottleneck (expansion 2, grouped for the ``x`` ResNeXt variants) and a
Res2Net hierarchical-split bottleneck. The classifier is a 1x1 conv (``fc``) on the pooled map.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.pool import create_classifier
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["DLA", "DlaBasic", "DlaBottleneck", "DlaBottle2neck", "VARIANTS"]


class DlaBasic(nn.Module):
    """Two 3x3 convs; the shortcut is given by the tree (``x`` itself when absent)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, **_: Any) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        if shortcut is None:
            shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


def _mid_width(outplanes: int, cardinality: int, base_width: int, expansion: int) -> int:
    return int(math.floor(outplanes * (base_width / 64)) * cardinality) // expansion


class DlaBottleneck(nn.Module):
    """1x1 -> 3x3 (grouped) -> 1x1 with a bottleneck of ``outplanes / 2`` (ResNeXt-scaled)."""

    expansion = 2

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, dilation: int = 1, cardinality: int = 1,
                 base_width: int = 64, **_: Any) -> None:
        super().__init__()
        mid = _mid_width(outplanes, cardinality, base_width, self.expansion)
        self.conv1 = nn.Conv2d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=dilation, dilation=dilation, groups=cardinality,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        if shortcut is None:
            shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


class DlaBottle2neck(nn.Module):
    """Res2Net bottleneck for DLA: ``scale`` channel chunks, chained 3x3 convs, the last chunk passed
    through (average-pooled in a strided block, where the chunks are not chained)."""

    expansion = 2

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, dilation: int = 1, scale: int = 4,
                 cardinality: int = 8, base_width: int = 4, **_: Any) -> None:
        super().__init__()
        self.is_first = stride > 1
        self.scale = scale
        self.width = mid = _mid_width(outplanes, cardinality, base_width, self.expansion)
        n = max(1, scale - 1)
        self.conv1 = nn.Conv2d(inplanes, mid * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid * scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(mid, mid, 3, stride=stride, padding=dilation, dilation=dilation, groups=cardinality, bias=False)
            for _ in range(n))
        self.bns = nn.ModuleList(nn.BatchNorm2d(mid) for _ in range(n))
        self.pool = nn.AvgPool2d(3, stride=stride, padding=1) if self.is_first else None
        self.conv3 = nn.Conv2d(mid * scale, outplanes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outplanes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        if shortcut is None:
            shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        chunks = torch.split(out, self.width, 1)
        outs: list[torch.Tensor] = []
        sp = chunks[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            sp = chunks[i] if i == 0 or self.is_first else sp + chunks[i]
            sp = self.relu(bn(conv(sp)))
            outs.append(sp)
        if self.scale > 1:
            outs.append(self.pool(chunks[-1]) if self.pool is not None else chunks[-1])
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        return self.relu(out + shortcut)


class DlaRoot(nn.Module):
    """Aggregation node: conv + norm over the concatenated children, ReLU (residual on the first)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, residual: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        out = self.bn(self.conv(torch.cat(xs, 1)))
        if self.residual:
            out = out + xs[0]
        return self.relu(out)


class DlaTree(nn.Module):
    """Aggregation tree of depth ``levels`` (see the module docstring)."""

    def __init__(self, levels: int, block: type, in_channels: int, out_channels: int, stride: int = 1,
                 dilation: int = 1, level_root: bool = False, root_dim: int = 0, root_kernel_size: int = 1,
                 root_residual: bool = False, block_args: dict[str, Any] | None = None) -> None:
        super().__init__()
        root_dim = root_dim or 2 * out_channels
        if level_root:
            root_dim += in_channels
        self.levels = levels
        self.level_root = level_root
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else nn.Identity()
        self.project: Optional[nn.Module] = None
        if levels == 1 and in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                         nn.BatchNorm2d(out_channels))
        bargs = dict(dilation=dilation, **(block_args or {}))
        if levels == 1:
            self.tree1: nn.Module = block(in_channels, out_channels, stride, **bargs)
            self.tree2: nn.Module = block(out_channels, out_channels, 1, **bargs)
            self.root: Optional[DlaRoot] = DlaRoot(root_dim, out_channels, root_kernel_size, root_residual)
        else:
            targs = dict(dilation=dilation, root_kernel_size=root_kernel_size, root_residual=root_residual,
                         block_args=block_args)
            self.tree1 = DlaTree(levels - 1, block, in_channels, out_channels, stride, root_dim=0, **targs)
            self.tree2 = DlaTree(levels - 1, block, out_channels, out_channels, root_dim=root_dim + out_channels,
                                 **targs)
            self.root = None

    def forward(self, x: torch.Tensor, children: Optional[list[torch.Tensor]] = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x)
        if self.level_root:
            children.append(bottom)
        if self.root is not None:
            shortcut = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, shortcut)
            x2 = self.tree2(x1)
            return self.root([x2, x1] + children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children)


def _conv_level(in_chs: int, out_chs: int, convs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(convs):
        mods += [nn.Conv2d(in_chs, out_chs, 3, stride=stride if i == 0 else 1, padding=dilation, dilation=dilation,
                           bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True)]
        in_chs = out_chs
    return nn.Sequential(*mods)


class DLA(FeatureMixin, ModelForwardMixin, nn.Module):
    """DLA: ``base_layer`` -> ``level0``/``level1`` conv levels -> ``level2..5`` trees -> pool -> 1x1 conv."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": False}
    default_out_indices = (1, 2, 3, 4, 5)
    _stem_level = False

    def __init__(self, *, levels: Sequence[int], channels: Sequence[int], block: type = DlaBottle2neck,
                 cardinality: int = 1, base_width: int = 64, shortcut_root: bool = False,
                 block_args: dict[str, Any] | None = None, output_stride: int = 32, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError("DLA supports only output_stride=32")
        self.channels = channels
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.base_layer = nn.Sequential(nn.Conv2d(in_chans, channels[0], 7, padding=3, bias=False),
                                        nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        self.level0 = _conv_level(channels[0], channels[0], levels[0])
        self.level1 = _conv_level(channels[0], channels[1], levels[1], stride=2)
        bargs = dict(cardinality=cardinality, base_width=base_width, **(block_args or {}))
        for i in range(2, 6):
            self.add_module(f"level{i}", DlaTree(levels[i], block, channels[i - 1], channels[i], 2,
                                                 level_root=i > 2, root_residual=shortcut_root, block_args=bargs))
        self.feature_info = [dict(num_chs=c, reduction=2 ** i, module=f"level{i}") for i, c in enumerate(channels)]
        self.level_names = [f"level{i}" for i in range(6)]
        self.num_features = self.head_hidden_size = channels[-1]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool,
                                                      use_conv=True)
        self.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool, use_conv=True)
        self.flatten = nn.Flatten(1) if pool else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.base_layer(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_seq(self._feature_stages(), x)
        x = self.level0(x)
        x = self.level1(x)
        x = self.level2(x)
        x = self.level3(x)
        x = self.level4(x)
        return self.level5(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        if pre_logits:
            return self.flatten(x)
        return self.flatten(self.fc(x))

    # --- FeatureMixin hooks: levels 0..5 are the outputs of level0..level5 --------------------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.base_layer(x), None

    def _feature_stages(self) -> list[nn.Module]:
        levels = [getattr(self, n) for n in self.level_names]
        return [m for m in levels if not isinstance(m, nn.Identity)]  # pruned levels are identities

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        # identities rather than deletions: forward_features names every level (TorchScript)
        for name in self.level_names[num_stages:]:
            setattr(self, name, nn.Identity())


_L60, _L102 = (1, 1, 1, 2, 3, 1), (1, 1, 1, 3, 4, 1)
_C_SMALL, _C_BIG = (16, 32, 64, 64, 128, 256), (16, 32, 128, 256, 512, 1024)
_X = dict(cardinality=32, base_width=4)
_DLA60 = Variant(DLA, levels=_L60, channels=_C_BIG, block=DlaBottleneck)
_DLA102 = _DLA60.but(levels=_L102, shortcut_root=True)
VARIANTS: dict[str, Variant] = {
    "dla34": Variant(DLA, levels=(1, 1, 1, 2, 2, 1), channels=(16, 32, 64, 128, 256, 512), block=DlaBasic),
    "dla46_c": Variant(DLA, levels=(1, 1, 1, 2, 2, 1), channels=_C_SMALL, block=DlaBottleneck),
    "dla46x_c": Variant(DLA, levels=(1, 1, 1, 2, 2, 1), channels=_C_SMALL, block=DlaBottleneck, **_X),
    "dla60x_c": Variant(DLA, levels=_L60, channels=_C_SMALL, block=DlaBottleneck, **_X),
    "dla60": _DLA60,
    "dla60x": _DLA60.but(**_X),
    "dla102": _DLA102,
    "dla102x": _DLA102.but(**_X),
    "dla102x2": _DLA102.but(cardinality=64, base_width=4),
    "dla169": _DLA102.but(levels=(1, 1, 2, 3, 5, 1)),
    "dla60_res2net": _DLA60.but(block=DlaBottle2neck, cardinality=1, base_width=28),
    "dla60_res2next": _DLA60.but(block=DlaBottle2neck, cardinality=8, base_width=4),
}

register_family("dla", VARIANTS)
