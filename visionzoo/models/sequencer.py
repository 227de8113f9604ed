"""Sequencer2D ("Sequencer: Deep LSTM for Image Classification", Tatsunami & Taki 2022).

A MetaFormer whose token mixer is a recurrent net instead of attention: BiLSTM2D runs one
bidirectional LSTM down every column (vertical) and one along every row (horizontal) of the
channels-last map, concatenates the four directional hidden states of each position and fuses
them with a linear layer. The channel mixer is a plain MLP. A 7x7/7 patch embedding makes a
32x32 grid at 224 px; a 2x2/2 embedding halves it once, later stages re-embed with 1x1 convs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.drop import DropPath, drop_path_rates
from ..layers.final_norm import StagesFinalNormMixin
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family
from .swin_transformer import _NhwcClassifierHead

__all__ = ["Sequencer2d", "BiLstm2d"]


class BiLstm2d(nn.Module):
    """BiLSTM2D token mixing on ``[B, H, W, C]``: ``fc(cat(BiLSTM_v(columns), BiLSTM_h(rows)))``.

    Each direction of each LSTM has ``hidden_size`` units, so the concatenation is ``4 * hidden_size``
    wide (equal to ``dim`` in the published models).
    """

    def __init__(self, dim: int, hidden_size: int, num_layers: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(4 * hidden_size, dim)  # registered first: the published state_dict order
        self.rnn_v = nn.LSTM(dim, hidden_size, num_layers, bias=bias, batch_first=True, bidirectional=True)
        self.rnn_h = nn.LSTM(dim, hidden_size, num_layers, bias=bias, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        # columns: one length-H sequence per (batch, column)
        v, _ = self.rnn_v(x.permute(0, 2, 1, 3).reshape(b * w, h, c))
        v = v.reshape(b, w, h, -1).permute(0, 2, 1, 3)
        # rows: one length-W sequence per (batch, row)
        hz, _ = self.rnn_h(x.reshape(b * h, w, c))
        hz = hz.reshape(b, h, w, -1)
        return self.fc(torch.cat([v, hz], dim=-1))


class Sequencer2dBlock(nn.Module):
    """Pre-norm residual block: BiLSTM2D token mixing, then an MLP over channels."""

    def __init__(self, dim: int, hidden_size: int, mlp_ratio: float = 3.0, drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.rnn_tokens = BiLstm2d(dim, hidden_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.rnn_tokens(self.norm1(x)))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class Downsample2d(nn.Module):
    """Patch re-embedding between stages: a ``patch``/``patch`` conv on a channels-last map."""

    def __init__(self, in_chs: int, out_chs: int, patch_size: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_chs, out_chs, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Sequencer2dStage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, patch_size: int, downsample: bool, dp_rates: list[float],
                 **block_kw) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample2d(in_chs, dim, patch_size) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[Sequencer2dBlock(dim, drop_path=dp_rates[i], **block_kw) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Sequencer2d(StagesFinalNormMixin, FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Patch embed, four BiLSTM2D stages on channels-last maps (``output_fmt`` NHWC), final
    LayerNorm, global average pool and a linear head."""

    # the reference's features_only default: the first three levels
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True, "out_indices": (0, 1, 2)}
    _stem_level = False
    _native_fmt = "NHWC"
    _output_fmts = ("NCHW", "NHWC")
    _norm_is_final = True

    def __init__(self, *, layers: tuple[int, ...] = (4, 3, 8, 3), patch_sizes: tuple[int, ...] = (7, 2, 1, 1),
                 embed_dims: tuple[int, ...] = (192, 384, 384, 384), hidden_sizes: tuple[int, ...] = (48, 96, 96, 96),
                 mlp_ratios: tuple[float, ...] = (3.0, 3.0, 3.0, 3.0), img_size: int | tuple[int, int] = 224,
                 num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.output_fmt = "NHWC"  # layout of forward_features and of features_only maps
        # any size the patches divide runs (``img_size`` is the nominal one)
        self.stem = PatchEmbed(img_size, patch_sizes[0], in_chans, embed_dims[0], output_fmt="NHWC",
                               strict_img_size=False)
        dpr = drop_path_rates(drop_path_rate, list(layers))
        reduction = patch_sizes[0]
        stages, self.feature_info = [], []
        for i, depth in enumerate(layers):
            if i > 0:
                reduction *= patch_sizes[i]
            stages.append(Sequencer2dStage(embed_dims[max(i - 1, 0)], embed_dims[i], depth, patch_sizes[i], i > 0,
                                           dpr[i], hidden_size=hidden_sizes[i], mlp_ratio=mlp_ratios[i],
                                           drop=proj_drop_rate))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm: nn.Module = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head = _NhwcClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)



_s = Variant(Sequencer2d, layers=(4, 3, 8, 3))
VARIANTS: dict[str, Variant] = {
    "sequencer2d_s": _s,
    "sequencer2d_m": _s.but(layers=(4, 3, 14, 3)),
    "sequencer2d_l": _s.but(layers=(8, 8, 16, 4)),
}
register_family("sequencer", VARIANTS)
