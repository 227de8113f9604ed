"""Xception (Chollet, 2017, https://arxiv.org/abs/1610.02357), the original ("legacy") layout.

Xception replaces Inception modules by depthwise-separable convs: a valid-padded two-conv stem,
an entry flow of three residual blocks that each halve the resolution (separable convs, then a
3x3 max pool; 1x1 strided conv on the shortcut), a middle flow of eight residual blocks of three
ReLU -> separable conv -> BN units at 728 channels, an exit block to 1024 channels and two final
separable convs (1536, 2048). Module names are the published checkpoint's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Variant, register_family
from .inception_v3 import NamedTrunkMixin, PooledFcHeadMixin

__all__ = ["Xception", "XceptionBlock", "SeparableConv2d", "VARIANTS"]


class SeparableConv2d(nn.Module):
    """Depthwise ``conv1`` (kxk) then ``pointwise`` (1x1), both without bias."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, in_chs, kernel_size, 1, padding, groups=in_chs, bias=False)
        self.pointwise = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class XceptionBlock(nn.Module):
    """``reps`` units of ReLU -> separable conv -> BN (``rep``; the first ReLU is dropped when the
    block does not start with one), a 3x3 stride-2 max pool when strided, plus the shortcut (1x1
    strided conv + BN ``skip``/``skipbn`` when the shape changes)."""

    def __init__(self, in_chs: int, out_chs: int, reps: int, stride: int = 1, start_with_relu: bool = True,
                 grow_first: bool = True) -> None:
        super().__init__()
        if out_chs != in_chs or stride != 1:
            self.skip = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_chs)
        else:
            self.skip = None
            self.skipbn = None
        layers: list[nn.Module] = []
        for i in range(reps):
            if grow_first:
                cin, cout = (in_chs if i == 0 else out_chs), out_chs
            else:
                cin, cout = in_chs, (in_chs if i < reps - 1 else out_chs)
            # the block's first ReLU must not act in place: the shortcut reads the same input
            layers += [nn.ReLU(inplace=i > 0), SeparableConv2d(cin, cout), nn.BatchNorm2d(cout)]
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rep(x)
        if self.skip is not None and self.skipbn is not None:
            x = self.skipbn(self.skip(x))
        return out + x


class Xception(NamedTrunkMixin, PooledFcHeadMixin, nn.Module):
    """Xception with the published module names (``conv1``..``conv4``, ``block1``..``block12``).

    Feature levels: the stem (``act2``), the ReLU'd outputs of the entry blocks 1 and 2 and of the
    last middle block (read where the next block's first ReLU runs: ``blockN.rep.0``), and ``act4``.
    """

    feature_cfg = {"feature_cls": "hook", "no_rewrite": True}  # the reference wrapper: the model nested as ``body``
    trunk_names = ("conv1", "bn1", "act1", "conv2", "bn2", "act2", *[f"block{i}" for i in range(1, 13)],
                   "conv3", "bn3", "act3", "conv4", "bn4", "act4")

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"Xception supports output_stride=32 only, got {output_stride}")
        self.grad_checkpointing = False
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 2, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = nn.ReLU(inplace=True)
        self.block1 = XceptionBlock(64, 128, 2, 2, start_with_relu=False)
        self.block2 = XceptionBlock(128, 256, 2, 2)
        self.block3 = XceptionBlock(256, 728, 2, 2)
        for i in range(4, 12):
            setattr(self, f"block{i}", XceptionBlock(728, 728, 3, 1))
        self.block12 = XceptionBlock(728, 1024, 2, 2, grow_first=False)
        self.conv3 = SeparableConv2d(1024, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.act3 = nn.ReLU(inplace=True)
        self.conv4 = SeparableConv2d(1536, 2048)
        self.bn4 = nn.BatchNorm2d(2048)
        self.act4 = nn.ReLU(inplace=True)
        self.feature_info = [
            dict(num_chs=64, reduction=2, module="act2"),
            dict(num_chs=128, reduction=4, module="block2.rep.0"),
            dict(num_chs=256, reduction=8, module="block3.rep.0"),
            dict(num_chs=728, reduction=16, module="block12.rep.0"),
            dict(num_chs=2048, reduction=32, module="act4"),
        ]
        self.num_features = self.head_hidden_size = 2048
        self._init_head(num_classes, global_pool, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            for i, stage in enumerate(self._feature_stages()):
                x = self._run_stage(i, stage, x)
            return x
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        x = self.block4(self.block3(self.block2(self.block1(x))))
        x = self.block8(self.block7(self.block6(self.block5(x))))
        x = self.block12(self.block11(self.block10(self.block9(x))))
        x = self.act3(self.bn3(self.conv3(x)))
        return self.act4(self.bn4(self.conv4(x)))

    # --- NamedTrunkMixin hooks: ``blockN.rep.0`` is block N-1's output through a ReLU -------------
    def _level_positions(self) -> list[int]:
        kept = len(self._feature_stages())
        pos = {n: i for i, n in enumerate(self.trunk_names)}
        out = []
        for info in self.feature_info:
            name = info["module"]
            p = pos[f"block{int(name.split('.')[0][5:]) - 1}"] if name.endswith(".rep.0") else pos[name]
            if p >= kept:
                break
            out.append(p)
        return out

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        return F.relu(x)  # the entry/middle block levels are ReLU'd; act2/act4 already are


VARIANTS: dict[str, Variant] = {
    "legacy_xception": Variant(Xception),
}
register_family("xception", VARIANTS)
