"""MambaOut ("MambaOut: Do We Really Need Mamba for Vision?", Yu & Wang 2024).

Mamba's block with the state-space model removed: a Gated CNN block. After a LayerNorm, one linear
layer produces a gate ``g``, an identity part ``i`` and a conv part ``c``; ``c`` goes through a
7x7 depthwise conv, and the output is ``fc2(act(g) * [i, c])`` added to the input (optionally
layer-scaled). Four channels-last stages behind a two-conv stem, strided 3x3 conv downsampling,
and an MLP head (pool -> LN -> fc -> act [-> LN] -> fc).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.activations import get_act_layer
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.layer_scale import LayerScale
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["MambaOut", "GatedConvBlock"]


def _ln(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def _conv_nhwc(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MambaOutStem(nn.Module):
    """Two stride-2 3x3 convs (GELU between, LayerNorm after each or only the last); NCHW in, NHWC out."""

    def __init__(self, in_chs: int, out_chs: int, act_layer, mid_norm: bool = True) -> None:
        super().__init__()
        mid = out_chs // 2
        self.conv1 = nn.Conv2d(in_chs, mid, 3, stride=2, padding=1)
        self.norm1 = _ln(mid) if mid_norm else None
        self.act = act_layer()
        self.conv2 = nn.Conv2d(mid, out_chs, 3, stride=2, padding=1)
        self.norm2 = _ln(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).permute(0, 2, 3, 1)
        if self.norm1 is not None:
            x = self.norm1(x)
        x = _conv_nhwc(self.conv2, self.act(x))
        return self.norm2(x)


class Downsample(nn.Module):
    """Strided 3x3 conv on a channels-last map, LayerNorm after it (or before it: ``norm_first``)."""

    def __init__(self, in_chs: int, out_chs: int, norm_first: bool = False) -> None:
        super().__init__()
        self.norm_first = norm_first
        if norm_first:
            self.norm = _ln(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        if not norm_first:
            self.norm = _ln(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            return _conv_nhwc(self.conv, self.norm(x))
        return self.norm(_conv_nhwc(self.conv, x))


class GatedConvBlock(nn.Module):
    def __init__(self, dim: int, expansion_ratio: float = 8 / 3, kernel_size: int = 7, conv_ratio: float = 1.0,
                 ls_init_value: float | None = None, act_layer=nn.GELU, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(expansion_ratio * dim)
        conv_chs = int(conv_ratio * dim)
        self.split_sizes = (hidden, hidden - conv_chs, conv_chs)
        self.norm = _ln(dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.act = act_layer()
        self.conv = nn.Conv2d(conv_chs, conv_chs, kernel_size, padding=kernel_size // 2, groups=conv_chs)
        self.fc2 = nn.Linear(hidden, dim)
        self.ls = LayerScale(dim, ls_init_value) if ls_init_value is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, i, c = torch.split(self.fc1(self.norm(x)), self.split_sizes, dim=-1)
        c = _conv_nhwc(self.conv, c)
        y = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
        return x + self.drop_path(self.ls(y))


class MambaOutStage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, downsample: bool, norm_first: bool, dp_rates,
                 **block_kw) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_chs, dim, norm_first) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[GatedConvBlock(dim, drop_path=dp_rates[i], **block_kw) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MambaOutHead(nn.Module):
    """Channels-last pool -> LN -> fc -> act [-> LN] -> dropout -> fc."""

    def __init__(self, in_features: int, num_classes: int, hidden_size: int, pool_type: str = "avg",
                 act_layer=nn.GELU, hidden_norm: bool = True, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True, input_fmt="NHWC")
        self.norm = _ln(in_features)
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module("fc", nn.Linear(in_features, hidden_size))
        self.pre_logits.add_module("act", act_layer())
        if hidden_norm:
            self.pre_logits.add_module("norm", _ln(hidden_size))
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True, input_fmt="NHWC")
        self.fc = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pre_logits(self.norm(self.global_pool(x))))
        return x if pre_logits else self.fc(x)


class MambaOut(FeatureMixin, ModelForwardMixin, nn.Module):
    """Gated-CNN stages at strides 4..32 on channels-last maps (``output_fmt`` NHWC)."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False
    _native_fmt = "NHWC"
    _output_fmts = ("NCHW", "NHWC")

    def __init__(self, *, depths=(3, 3, 9, 3), dims=(96, 192, 384, 576), expansion_ratio: float = 8 / 3,
                 kernel_size: int = 7, conv_ratio: float = 1.0, ls_init_value: float | None = None,
                 stem_mid_norm: bool = True, downsample_norm_first: bool = False, head_mlp_ratio: float = 4.0,
                 head_hidden_norm: bool = True, head_act="gelu", act_layer="gelu", num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        act = get_act_layer(act_layer)
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.output_fmt = "NHWC"
        self.stem = MambaOutStem(in_chans, dims[0], act, mid_norm=stem_mid_norm)
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            MambaOutStage(dims[max(i - 1, 0)], dims[i], depths[i], i > 0, downsample_norm_first, dpr[i],
                          expansion_ratio=expansion_ratio, kernel_size=kernel_size, conv_ratio=conv_ratio,
                          ls_init_value=ls_init_value, act_layer=act)
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = dims[-1]
        self.head_hidden_size = int(head_mlp_ratio * dims[-1])
        self.head = MambaOutHead(dims[-1], num_classes, self.head_hidden_size, pool_type=global_pool,
                                 act_layer=get_act_layer(head_act), hidden_norm=head_hidden_norm, drop_rate=drop_rate)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    # FeatureMixin hooks




_tiny = Variant(MambaOut, depths=(3, 3, 9, 3), dims=(96, 192, 384, 576))
# the "rw" variants: no mid-stem norm, norm-first downsampling, layer scale, head without hidden norm;
# the wide / plus bases (and the test model) use SiLU
_rw = _tiny.but(depths=(3, 4, 27, 3), stem_mid_norm=False, downsample_norm_first=True, ls_init_value=1e-6,
                head_hidden_norm=False, head_act="gelu")
_base_rw = _rw.but(dims=(128, 256, 512, 768), expansion_ratio=3.0, conv_ratio=1.5, act_layer="silu")
VARIANTS: dict[str, Variant] = {
    "mambaout_femto": _tiny.but(dims=(48, 96, 192, 288)),
    "mambaout_kobe": _tiny.but(depths=(3, 3, 15, 3), dims=(48, 96, 192, 288)),
    "mambaout_tiny": _tiny,
    "mambaout_small": _tiny.but(depths=(3, 4, 27, 3)),
    "mambaout_base": _tiny.but(depths=(3, 4, 27, 3), dims=(128, 256, 512, 768)),
    "mambaout_small_rw": _rw,
    "mambaout_base_short_rw": _base_rw.but(depths=(3, 3, 25, 3), conv_ratio=1.25, act_layer="gelu"),
    "mambaout_base_tall_rw": _base_rw.but(depths=(3, 4, 30, 3), expansion_ratio=2.5, conv_ratio=1.25, act_layer="gelu"),
    "mambaout_base_wide_rw": _base_rw,
    "mambaout_base_plus_rw": _base_rw.but(depths=(3, 4, 30, 3)),
    "test_mambaout": _rw.but(depths=(1, 1, 3, 1), dims=(16, 32, 48, 64), expansion_ratio=3.0, act_layer="silu"),
}
register_family("mambaout", VARIANTS)
