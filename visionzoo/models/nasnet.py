"""NASNet-A: "Learning Transferable Architectures for Scalable Image Recognition" (Zoph et al., 2018).
https://arxiv.org/abs/1707.07012

A normal cell and a reduction cell found by architecture search, stacked as
``conv0 -> 2 stem reduction cells -> (6 normal cells, reduction cell) x 2 -> 6 normal cells``.
Every cell takes the two previous cell outputs (``cur``, ``prev``), brings both to its width
(ReLU -> 1x1 conv -> BN; a ``prev`` at twice the resolution goes through a factorised
reduction), combines them in five pairwise sums of separable convs / pools / identities and
concatenates the results. The ops were trained in TensorFlow: BN eps 1e-3, TF "SAME" padding on
the strided ops, average pools that ignore padding.

The cell ops below (:class:`BranchSeparables`, :class:`ActConvBn`, factorised reduction, pools)
are shared with PNASNet.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.grad_checkpoint import checkpoint_module
from ..layers.padding import MaxPool2dSame, create_conv2d_pad, pad_to_same, resolve_padding
from .base import Variant, register_family
from .inception_v3 import NamedTrunkMixin, PooledFcHeadMixin

__all__ = ["NASNetALarge", "CellNet", "BranchSeparables", "ActConvBn", "FactorizedReduction", "create_pool", "VARIANTS"]

_BN_EPS = 1e-3  # TF-trained


def _bn(chs: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(chs, eps=_BN_EPS, momentum=0.1)


class AvgPool2dSame(nn.Module):
    """Average pool with TF "SAME" padding worked out per input (zeros padded, then averaged)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = (self.kernel_size, self.kernel_size), (self.stride, self.stride)
        return F.avg_pool2d(pad_to_same(x, k, s), k, s)


def create_pool(kind: str, kernel_size: int, stride: int, padding: str = "") -> nn.Module:
    """A ``'max'`` / ``'avg'`` pool; ``padding='same'`` gives TF "SAME" (dynamic when strided).
    Statically padded average pools ignore the padding, as TF's do."""
    amount, dynamic = resolve_padding(padding, kernel_size, stride)
    if kind == "max":
        return MaxPool2dSame(kernel_size, stride) if dynamic else nn.MaxPool2d(kernel_size, stride, amount)
    if dynamic:
        return AvgPool2dSame(kernel_size, stride)
    return nn.AvgPool2d(kernel_size, stride, amount, count_include_pad=False)


class SeparableConv2d(nn.Module):
    """``depthwise_conv2d`` (kxk, groups=in) -> ``pointwise_conv2d`` (1x1), no norm in between."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, padding: str = "") -> None:
        super().__init__()
        self.depthwise_conv2d = create_conv2d_pad(in_chs, in_chs, kernel_size, stride=stride, padding=padding,
                                                  groups=in_chs)
        self.pointwise_conv2d = create_conv2d_pad(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv2d(self.depthwise_conv2d(x))


class BranchSeparables(nn.Module):
    """The searched "separable kxk" op: (ReLU -> separable conv -> BN) twice, stride on the first."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, padding: str = "") -> None:
        super().__init__()
        self.act_1 = nn.ReLU()
        self.separable_1 = SeparableConv2d(in_chs, out_chs, kernel_size, stride, padding)
        self.bn_sep_1 = _bn(out_chs)
        self.act_2 = nn.ReLU()
        self.separable_2 = SeparableConv2d(out_chs, out_chs, kernel_size, 1, padding)
        self.bn_sep_2 = _bn(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_sep_1(self.separable_1(self.act_1(x)))
        return self.bn_sep_2(self.separable_2(self.act_2(x)))


class ActConvBn(nn.Module):
    """ReLU -> conv (no bias) -> BN: how a cell brings an input to its width (``act`` is hookable:
    its output is the feature map the reference reads)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, padding: str = "") -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.conv = create_conv2d_pad(in_chs, out_chs, kernel_size, stride=stride, padding=padding)
        self.bn = _bn(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class _ShiftOne(nn.Module):
    """Shift the map one pixel up-left (zero fill): the second path of a factorised reduction
    samples the pixels the first (stride-2) path skips."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]


def _reduce_paths(in_chs: int, out_chs: int) -> tuple[nn.Sequential, nn.Sequential, nn.BatchNorm2d]:
    """(path_1, path_2, final_path_bn) of a factorised reduction to ``out_chs`` at half resolution."""
    path_1 = nn.Sequential()
    path_1.add_module("avgpool", nn.AvgPool2d(1, stride=2, count_include_pad=False))
    path_1.add_module("conv", nn.Conv2d(in_chs, out_chs // 2, 1, bias=False))
    path_2 = nn.Sequential()
    path_2.add_module("pad", _ShiftOne())
    path_2.add_module("avgpool", nn.AvgPool2d(1, stride=2, count_include_pad=False))
    path_2.add_module("conv", nn.Conv2d(in_chs, out_chs // 2, 1, bias=False))
    return path_1, path_2, _bn(out_chs)


class FactorizedReduction(nn.Module):
    """ReLU, then two offset stride-2 1x1 convs concatenated and normalised (no pixel dropped)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.path_1, self.path_2, self.final_path_bn = _reduce_paths(in_chs, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))


class NormalCell(nn.Module):
    """NASNet-A normal cell; output ``cat[prev, comb0..comb4]`` (6 x ``chs``)."""

    def __init__(self, in_chs: int, prev_chs: int, chs: int, prev_reduce: bool = False) -> None:
        super().__init__()
        self.prev_reduce = prev_reduce
        if prev_reduce:  # published registration order: conv_1x1 first, then the reduction paths
            self.conv_1x1 = ActConvBn(in_chs, chs)
            self.act = nn.ReLU()
            self.path_1, self.path_2, self.final_path_bn = _reduce_paths(prev_chs, chs)
            self.conv_prev_1x1 = nn.Identity()
        else:
            self.conv_prev_1x1 = ActConvBn(prev_chs, chs)
            self.conv_1x1 = ActConvBn(in_chs, chs)
        self.comb_iter_0_left = BranchSeparables(chs, chs, 5)
        self.comb_iter_0_right = BranchSeparables(chs, chs, 3)
        self.comb_iter_1_left = BranchSeparables(chs, chs, 5)
        self.comb_iter_1_right = BranchSeparables(chs, chs, 3)
        self.comb_iter_2_left = create_pool("avg", 3, 1, "same")
        self.comb_iter_3_left = create_pool("avg", 3, 1, "same")
        self.comb_iter_3_right = create_pool("avg", 3, 1, "same")
        self.comb_iter_4_left = BranchSeparables(chs, chs, 3)

    def _prev(self, x_prev: torch.Tensor) -> torch.Tensor:
        if self.prev_reduce:
            x = self.act(x_prev)
            return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))
        return self.conv_prev_1x1(x_prev)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        prev = self._prev(x_prev)
        cur = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(cur) + self.comb_iter_0_right(prev)
        c1 = self.comb_iter_1_left(prev) + self.comb_iter_1_right(prev)
        c2 = self.comb_iter_2_left(cur) + prev
        c3 = self.comb_iter_3_left(prev) + self.comb_iter_3_right(prev)
        c4 = self.comb_iter_4_left(cur) + cur
        return torch.cat([prev, c0, c1, c2, c3, c4], 1)


class ReductionCell(nn.Module):
    """NASNet-A reduction cell (stride 2); output ``cat[comb1..comb4]`` (4 x ``chs``).

    The stem cells are reduction cells too: ``cell_stem_0`` reads the raw stem map as ``prev``
    (its ``prev`` ops map ``prev_chs`` to ``chs`` themselves); ``cell_stem_1``'s ``prev`` is at
    twice its input's resolution and goes through a factorised reduction.
    """

    def __init__(self, in_chs: int, prev_chs: int, chs: int, prev_mode: str = "conv", padding: str = "same") -> None:
        super().__init__()
        self.prev_mode = prev_mode
        p_chs = chs
        if prev_mode == "conv":
            self.conv_prev_1x1 = ActConvBn(prev_chs, chs)
            self.conv_1x1 = ActConvBn(in_chs, chs)
        else:
            self.conv_1x1 = ActConvBn(in_chs, chs)
            if prev_mode == "reduce":
                self.act = nn.ReLU()
                self.path_1, self.path_2, self.final_path_bn = _reduce_paths(prev_chs, chs)
            else:  # "raw": the prev branch ops take the unprojected input
                p_chs = prev_chs
        self.comb_iter_0_left = BranchSeparables(chs, chs, 5, 2, padding)
        self.comb_iter_0_right = BranchSeparables(p_chs, chs, 7, 2, padding)
        self.comb_iter_1_left = create_pool("max", 3, 2, padding)
        self.comb_iter_1_right = BranchSeparables(p_chs, chs, 7, 2, padding)
        self.comb_iter_2_left = create_pool("avg", 3, 2, padding)
        self.comb_iter_2_right = BranchSeparables(p_chs, chs, 5, 2, padding)
        self.comb_iter_3_right = create_pool("avg", 3, 1, "same")
        self.comb_iter_4_left = BranchSeparables(chs, chs, 3, 1, padding)
        self.comb_iter_4_right = create_pool("max", 3, 2, padding)

    def _prev(self, x_prev: torch.Tensor) -> torch.Tensor:
        if self.prev_mode == "conv":
            return self.conv_prev_1x1(x_prev)
        if self.prev_mode == "reduce":
            x = self.act(x_prev)
            return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))
        return x_prev

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        prev = self._prev(x_prev)
        cur = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(cur) + self.comb_iter_0_right(prev)
        c1 = self.comb_iter_1_left(cur) + self.comb_iter_1_right(prev)
        c2 = self.comb_iter_2_left(cur) + self.comb_iter_2_right(prev)
        c3 = self.comb_iter_3_right(c0) + c1
        c4 = self.comb_iter_4_left(c0) + self.comb_iter_4_right(cur)
        return torch.cat([c1, c2, c3, c4], 1)


class ConvBn(nn.Module):
    """The stem conv: 3x3 stride-2 valid conv -> BN (no activation: every cell op starts with one)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, bias=False)
        self.bn = _bn(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class CellTrunkMixin(NamedTrunkMixin):
    """Feature hooks for two-input cell nets (NASNet, PNASNet).

    The trunk is ``trunk_names`` (stem conv, cells, final act); its state is
    ``(out, prev for the next cell, this cell's first input)``. ``skip_reduction_input``: a cell
    after a reduction cell reads the reduction cell's ``prev`` (NASNet), not its input. A level
    named ``<cell>.conv_1x1.act`` is the ReLU of that cell's first input, read after the cell ran
    (so the reference's hook on that act also fires).
    """

    _final_after_stop_early = True
    skip_reduction_input = False

    def _forward_stem(self, x: torch.Tensor) -> tuple[Any, Optional[torch.Tensor]]:
        return (x, x, x, -1), None

    @property
    def _input_act_levels(self) -> set[str]:
        return {f["module"].split(".")[0] for f in self.feature_info if f["module"].endswith(".conv_1x1.act")}

    def _run_stage(self, index: int, stage: nn.Module, x: Any) -> Any:
        out, prev = x[0], x[1]
        ckpt = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        if index == 0 or index == len(self.trunk_names) - 1:  # stem conv / final act: one input
            y = checkpoint_module(stage, out) if ckpt else stage(out)
            return y, y, out, index
        if index == 1:  # the first stem cell has no earlier cell: its prev is its input
            prev = out
        y = checkpoint_module(stage, out, prev) if ckpt else stage(out, prev)
        keep_prev = self.skip_reduction_input and self.trunk_names[index].startswith("reduction_cell")
        return y, (prev if keep_prev else out), out, index

    def _level_output(self, x: Any, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if self.trunk_names[x[3]] in self._input_act_levels:
            return F.relu(x[2])  # what the cell's conv_1x1.act computes from the cell's input
        return x[0]

    def _final(self, x: Any) -> torch.Tensor:
        return x[0]

    def _trunk_forward(self, x: torch.Tensor) -> torch.Tensor:
        state, _ = self._forward_stem(x)
        for i, stage in enumerate(self._feature_stages()):
            state = self._run_stage(i, stage, state)
        return state[0]


class CellNet(CellTrunkMixin, PooledFcHeadMixin, nn.Module):
    """What NASNet and PNASNet share beyond the trunk: the pooled ``last_linear`` classifier, the
    reference's hook wrapper (the model nested as ``body``) and ``forward_features``."""

    feature_cfg = {"feature_cls": "hook", "no_rewrite": True}
    classifier_name = "last_linear"

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk_forward(x)


class NASNetALarge(CellNet):
    """NASNet-A Large (6 @ 4032): ``conv0``, ``cell_stem_0/1``, ``cell_0..17`` with
    ``reduction_cell_0/1`` after cells 5 and 11, final ReLU ``act``, pooled ``last_linear``."""

    skip_reduction_input = True

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, stem_size: int = 96, num_features: int = 4032,
                 channel_multiplier: int = 2, output_stride: int = 32, pad_type: str = "same") -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"NASNet supports output_stride=32 only, got {output_stride}")
        self.grad_checkpointing = False
        c = num_features // 24  # 168: filters of the first normal stage (6 x c per cell output)
        m = channel_multiplier
        self.conv0 = ConvBn(in_chans, stem_size)
        self.cell_stem_0 = ReductionCell(stem_size, stem_size, c // (m * m), prev_mode="raw", padding=pad_type)
        self.cell_stem_1 = ReductionCell(4 * c // (m * m), stem_size, c // m, prev_mode="reduce", padding=pad_type)
        names = ["conv0", "cell_stem_0", "cell_stem_1"]
        # (cell input chs, prev chs) run through three stages of 6 normal cells
        in_chs, prev_chs = 4 * c // m, 4 * c // (m * m)
        idx = 0
        for stage in range(3):
            chs = c * m ** stage
            if stage > 0:
                red = f"reduction_cell_{stage - 1}"
                setattr(self, red, ReductionCell(in_chs, prev_chs, chs, padding=pad_type))
                names.append(red)
                # the next cell reads the reduction's output and the reduction's prev (skip_reduction_input)
                in_chs, prev_chs = 4 * chs, prev_chs
            for j in range(6):
                setattr(self, f"cell_{idx}", NormalCell(in_chs, prev_chs, chs, prev_reduce=j == 0))
                names.append(f"cell_{idx}")
                in_chs, prev_chs = 6 * chs, in_chs
                idx += 1
        self.act = nn.ReLU()
        names.append("act")
        self.trunk_names = tuple(names)
        self.feature_info = [
            dict(num_chs=stem_size, reduction=2, module="conv0"),
            dict(num_chs=4 * c // (m * m), reduction=4, module="cell_stem_1.conv_1x1.act"),
            dict(num_chs=6 * c, reduction=8, module="reduction_cell_0.conv_1x1.act"),
            dict(num_chs=6 * c * m, reduction=16, module="reduction_cell_1.conv_1x1.act"),
            dict(num_chs=num_features, reduction=32, module="act"),
        ]
        self.num_features = self.head_hidden_size = num_features
        self._init_head(num_classes, global_pool, drop_rate)


VARIANTS: dict[str, Variant] = {
    "nasnetalarge": Variant(NASNetALarge),
}

register_family("nasnet", VARIANTS)
