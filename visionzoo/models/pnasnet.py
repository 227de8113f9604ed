"""PNASNet-5: "Progressive Neural Architecture Search" (Liu et al., 2018). https://arxiv.org/abs/1712.00559

One searched cell (five pairwise sums of separable convs, max-pools and an identity) used both
as the normal cell and, with stride 2, as the reduction cell: ``conv_0 -> 2 stem cells ->
cells 0..11`` with the strided cells at 4 and 8. Like NASNet every cell reads the two previous
outputs and concatenates its five sums; the cell ops, the feature hooks and the TF-trained
conventions (BN eps 1e-3, TF "SAME" padding on strided ops) are NASNet's (:mod:`.nasnet`).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import Variant, register_family
from .nasnet import ActConvBn, BranchSeparables, CellNet, ConvBn, FactorizedReduction, _bn, create_pool

__all__ = ["PNASNet5Large", "VARIANTS"]


class MaxPoolProject(nn.Module):
    """The searched "max-pool 3x3" op on an input of another width: pool -> 1x1 conv -> BN."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, padding: str) -> None:
        super().__init__()
        self.pool = create_pool("max", 3, stride, padding)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = _bn(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.pool(x)))


class PnasCell(nn.Module):
    """PNASNet-5 cell; output ``cat[comb0..comb4]`` (5 x ``chs``).

    ``prev_mode``: ``'conv'`` (ReLU-1x1-BN), ``'reduce'`` (factorised reduction: ``prev`` is at twice
    the input's resolution) or ``'raw'`` (the first stem cell: its ``prev`` ops read the stem map).
    """

    def __init__(self, in_chs: int, prev_chs: int, chs: int, stride: int = 1, prev_mode: str = "conv",
                 padding: str = "same") -> None:
        super().__init__()
        if prev_mode == "conv":
            self.conv_prev_1x1 = ActConvBn(prev_chs, chs)
        elif prev_mode == "reduce":
            self.conv_prev_1x1 = FactorizedReduction(prev_chs, chs)
        else:
            self.conv_prev_1x1 = nn.Identity()
        p_chs = prev_chs if prev_mode == "raw" else chs
        self.conv_1x1 = ActConvBn(in_chs, chs)
        self.comb_iter_0_left = BranchSeparables(p_chs, chs, 5, stride, padding)
        self.comb_iter_0_right = MaxPoolProject(p_chs, chs, stride, padding) if p_chs != chs \
            else create_pool("max", 3, stride, padding)
        self.comb_iter_1_left = BranchSeparables(chs, chs, 7, stride, padding)
        self.comb_iter_1_right = create_pool("max", 3, stride, padding)
        self.comb_iter_2_left = BranchSeparables(chs, chs, 5, stride, padding)
        self.comb_iter_2_right = BranchSeparables(chs, chs, 3, stride, padding)
        self.comb_iter_3_left = BranchSeparables(chs, chs, 3, 1, padding)
        self.comb_iter_3_right = create_pool("max", 3, stride, padding)
        self.comb_iter_4_left = BranchSeparables(p_chs, chs, 3, stride, padding)
        self.comb_iter_4_right = ActConvBn(chs, chs, 1, stride, padding) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        prev = self.conv_prev_1x1(x_prev)
        cur = self.conv_1x1(x)
        c0 = self.comb_iter_0_left(prev) + self.comb_iter_0_right(prev)
        c1 = self.comb_iter_1_left(cur) + self.comb_iter_1_right(cur)
        c2 = self.comb_iter_2_left(cur) + self.comb_iter_2_right(cur)
        c3 = self.comb_iter_3_left(c2) + self.comb_iter_3_right(cur)
        c4 = self.comb_iter_4_left(prev) + self.comb_iter_4_right(cur)
        return torch.cat([c0, c1, c2, c3, c4], 1)


class PNASNet5Large(CellNet):
    """PNASNet-5 Large (4320 features): ``conv_0``, ``cell_stem_0/1``, ``cell_0..11`` (strided at 4
    and 8), final ReLU ``act``, pooled ``last_linear``."""

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, stem_size: int = 96, num_features: int = 4320,
                 output_stride: int = 32, pad_type: str = "same") -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"PNASNet supports output_stride=32 only, got {output_stride}")
        self.grad_checkpointing = False
        c = num_features // 20  # 216: filters of the first stage (5 x c per cell output)
        self.conv_0 = ConvBn(in_chans, stem_size)
        self.cell_stem_0 = PnasCell(stem_size, stem_size, c // 4, 2, prev_mode="raw", padding=pad_type)
        self.cell_stem_1 = PnasCell(5 * c // 4, stem_size, c // 2, 2, prev_mode="reduce", padding=pad_type)
        names = ["conv_0", "cell_stem_0", "cell_stem_1"]
        in_chs, prev_chs, prev_reduce = 5 * c // 2, 5 * c // 4, True
        for i in range(12):
            stride = 2 if i in (4, 8) else 1
            chs = c * (1 if i < 4 else 2 if i < 8 else 4)
            mode = "reduce" if prev_reduce else "conv"
            setattr(self, f"cell_{i}", PnasCell(in_chs, prev_chs, chs, stride, prev_mode=mode, padding=pad_type))
            names.append(f"cell_{i}")
            in_chs, prev_chs, prev_reduce = 5 * chs, in_chs, stride > 1
        self.act = nn.ReLU()
        names.append("act")
        self.trunk_names = tuple(names)
        self.feature_info = [
            dict(num_chs=stem_size, reduction=2, module="conv_0"),
            dict(num_chs=5 * c // 4, reduction=4, module="cell_stem_1.conv_1x1.act"),
            dict(num_chs=5 * c, reduction=8, module="cell_4.conv_1x1.act"),
            dict(num_chs=10 * c, reduction=16, module="cell_8.conv_1x1.act"),
            dict(num_chs=num_features, reduction=32, module="act"),
        ]
        self.num_features = self.head_hidden_size = num_features
        self._init_head(num_classes, global_pool, drop_rate)


VARIANTS: dict[str, Variant] = {
    "pnasnet5large": Variant(PNASNet5Large),
}

register_family("pnasnet", VARIANTS)
