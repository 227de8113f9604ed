"""SelecSLS-Net (Mehta et al., XNect, 2020, https://arxiv.org/abs/1907.00837): a fast CNN built
from "selective long and short range skip" modules.

A module runs a chain of convs (3x3 strided, 1x1, 3x3 to half width, 1x1, 3x3 to half width) and
concatenates three of the intermediate maps (short-range skips); every module of a level except
the first also concatenates the output of the level's first module (the long-range skip) before
the final 1x1 conv. The net ends with a head of plain convs (two of them strided) before the
global pool and the classifier.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.conv_head import PoolFcHeadMixin
from .base import FeatureMixin, Variant, register_family

__all__ = ["SelecSls", "SelecSlsBlock", "VARIANTS"]


def _conv_bn(in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """conv (no bias) -> BN -> ReLU as a Sequential (keys ``0.*``/``1.*``, the published layout)."""
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


class SelecSlsBlock(nn.Module):
    """One SelecSLS module on ``[x, level_skip]``; returns ``[out, level_skip]`` (the first module of a
    level has no skip input and hands its own output on as the skip)."""

    def __init__(self, in_chs: int, skip_chs: int, mid_chs: int, out_chs: int, is_first: bool, stride: int) -> None:
        super().__init__()
        self.is_first = is_first
        self.conv1 = _conv_bn(in_chs, mid_chs, 3, stride)
        self.conv2 = _conv_bn(mid_chs, mid_chs, 1)
        self.conv3 = _conv_bn(mid_chs, mid_chs // 2, 3)
        self.conv4 = _conv_bn(mid_chs // 2, mid_chs, 1)
        self.conv5 = _conv_bn(mid_chs, mid_chs // 2, 3)
        self.conv6 = _conv_bn(2 * mid_chs + (0 if is_first else skip_chs), out_chs, 1)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        d1 = self.conv1(x[0])
        d2 = self.conv3(self.conv2(d1))
        d3 = self.conv5(self.conv4(d2))
        if self.is_first:
            out = self.conv6(torch.cat([d1, d2, d3], 1))
            return [out, out]
        return [self.conv6(torch.cat([d1, d2, d3, x[1]], 1)), x[1]]


class SelecSls(FeatureMixin, PoolFcHeadMixin, nn.Module):
    """SelecSLS-Net: 3x3 stride-2 stem, SelecSLS modules in three levels, a head of plain convs.

    Args:
        blocks: per module ``(in, skip, mid, out)``; a module with ``skip == 0`` starts a level
            (stride 2).
        head: per head conv ``(in, out, kernel, stride)``; the maps after the second and fourth are
            feature levels.
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, blocks: tuple[tuple[int, int, int, int], ...], head: tuple[tuple[int, int, int, int], ...],
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"SelecSls supports output_stride=32 only, got {output_stride}")
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.stem = _conv_bn(in_chans, 32, 3, 2)
        self.features = nn.Sequential(*[SelecSlsBlock(i, s, m, o, s == 0, 2 if s == 0 else 1) for i, s, m, o in blocks])
        self.head = nn.Sequential(*[_conv_bn(i, o, k, s) for i, o, k, s in head])
        self.feature_info = [dict(num_chs=32, reduction=2, module="stem.2")]
        reduction = 2
        for i, (_, skip, _, out) in enumerate(blocks):
            reduction *= 2 if skip == 0 else 1
            if i + 1 == len(blocks) or blocks[i + 1][1] == 0:  # a level ends
                self.feature_info.append(dict(num_chs=out, reduction=reduction, module=f"features.{i}"))
        for i, (_, out, _, stride) in enumerate(head):
            reduction *= stride
            if i % 2 == 1:  # the map after each strided head conv and its follower
                self.feature_info.append(dict(num_chs=out, reduction=reduction, module=f"head.{i}"))
        self.num_features = self.head_hidden_size = head[-1][1]
        self._init_pool_fc(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        xs = [self.stem(x)]
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            for block in self.features:
                xs = checkpoint_module(block, xs)
            return checkpoint_seq(self.head, xs[0])
        for block in self.features:  # (a loop, not Sequential.__call__: TorchScript types lists so)
            xs = block(xs)
        return self.head(xs[0])

    # --- FeatureMixin hooks: trunk = the modules then the head convs; levels pass [x, skip] lists ---
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.stem(x)
        return [x], x  # type: ignore[return-value]  # the modules take [x, level_skip]

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.features) + list(self.head)

    def _level_positions(self) -> list[int]:
        pos = {f"features.{i}": i for i in range(len(self.features))}
        pos.update({f"head.{i}": len(self.features) + i for i in range(len(self.head))})
        out = [-1]
        for info in self.feature_info[1:]:
            if info["module"] not in pos:
                break
            out.append(pos[info["module"]])
        return out

    def _run_stage(self, index: int, stage: nn.Module, x):  # noqa: ANN001 - a list in the modules
        if index == len(self.features):
            x = x[0]
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_module(stage, x)
        return stage(x)

    def _level_output(self, x, is_last: bool, norm: bool, output_fmt: str,  # noqa: ANN001
                      in_size: tuple[int, int]) -> torch.Tensor:
        return x[0] if isinstance(x, list) else x

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        n = len(self.features)
        self.features = self.features[:num_stages]
        self.head = self.head[:max(num_stages - n, 0)]


def _blocks(levels: tuple[tuple[int, int, int], ...], in_chs: int = 32) -> tuple[tuple[int, int, int, int], ...]:
    """Modules from ``(mid, last out, count)`` per level: every module but the level's last outputs
    ``mid`` channels; the first has no skip input, the others take its output as the skip."""
    out = []
    for mid, last, count in levels:
        for j in range(count):
            o = last if j == count - 1 else mid
            out.append((in_chs, 0 if j == 0 else mid, mid, o))
            in_chs = o
    return tuple(out)


def _head(in_chs: int, width: int, last: tuple[int, int, int]) -> tuple[tuple[int, int, int, int], ...]:
    """The head: 3x3 s2 to ``width``, 3x3 to 1024, then 3x3 s2 and a final conv (``last``:
    ``(out of the third, out of the fourth, kernel of the fourth)``)."""
    third, fourth, k = last
    return ((in_chs, width, 3, 2), (width, 1024, 3, 1), (1024, third, 3, 2), (third, fourth, k, 1))


_B42 = _blocks(((64, 128, 2), (144, 288, 2), (304, 480, 2)))
_B60 = _blocks(((64, 128, 2), (128, 288, 3), (288, 416, 4)))
_B84 = _blocks(((64, 144, 2), (144, 304, 5), (304, 512, 6)))
VARIANTS: dict[str, Variant] = {
    "selecsls42": Variant(SelecSls, blocks=_B42, head=_head(480, 960, (1024, 1280, 1))),
    "selecsls42b": Variant(SelecSls, blocks=_B42, head=_head(480, 960, (1280, 1024, 1))),
    "selecsls60": Variant(SelecSls, blocks=_B60, head=_head(416, 756, (1024, 1280, 1))),
    "selecsls60b": Variant(SelecSls, blocks=_B60, head=_head(416, 756, (1280, 1024, 1))),
    "selecsls84": Variant(SelecSls, blocks=_B84, head=_head(512, 960, (1024, 1280, 3))),
}
register_family("selecsls", VARIANTS)
