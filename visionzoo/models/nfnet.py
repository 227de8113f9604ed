"""Normalizer-Free networks: NF-ResNets / NF-RegNets (Brock et al., 2021, "Characterizing signal
propagation to close the performance gap in unnormalized ResNets") and NFNets (Brock et al., 2021,
"High-Performance Large-Scale Image Recognition Without Normalization").

There is no BatchNorm anywhere. Signal propagation is controlled analytically instead:

* every conv is a *scaled weight-standardised* conv (``layers.std_conv.ScaledStdConv2d``): its
  filters are standardised per output channel and scaled by ``gamma / sqrt(fan_in)`` and a learnt
  gain, so that unit-variance inputs give unit-variance outputs;
* ``gamma`` is the activation's variance-restoring constant (``1 / std(act(z))``, ``z ~ N(0, 1)``):
  it is folded into the convs' scale, or (the DeepMind-ported ``dm_`` models) applied in the
  activation itself (``gamma_in_act``);
* a residual block computes ``x + alpha * f(act(x) / beta)``: ``beta = sqrt(Var[x])`` is the
  analytically tracked variance of the residual stream (``Var`` grows by ``alpha**2`` per block
  and is reset to ``1 + alpha**2`` after each transition block, whose shortcut is a conv on the
  normalised input), so each residual branch sees unit-variance inputs;
* optional SkipInit (a learnt scalar ``skipinit_gain`` on the branch, ``dm_`` models) and squeeze-
  excite / ECA on the branch, whose output is multiplied by ``attn_gain = 2`` (a sigmoid gate
  halves the expected signal).

Block flavours: ResNet bottleneck (``conv1 1x1 -> conv2 3x3 [-> conv2b 3x3] -> conv3 1x1``, width
from the output channels, attention after ``conv3``) and RegNet (width from the input channels,
grouped, attention between ``conv2`` and ``conv3``).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import make_divisible
from ..layers.pool import ClassifierHead
from ..layers.squeeze_excite import get_attn
from ..layers.std_conv import ScaledStdConv2d
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["NormFreeNet", "NormFreeBlock", "GammaAct", "ACT_GAMMA", "VARIANTS"]

# 1 / std(act(z)) for z ~ N(0, 1): the constants published with the NFNet reference code
# (measured, not closed form; e.g. relu's analytic value is sqrt(2 / (1 - 1/pi)) = 1.7128).
ACT_GAMMA: dict[str, float] = {
    "identity": 1.0,
    "celu": 1.270926833152771,
    "elu": 1.2716004848480225,
    "gelu": 1.7015043497085571,
    "leaky_relu": 1.70590341091156,
    "relu": 1.7139588594436646,
    "relu6": 1.7131484746932983,
    "selu": 1.0008515119552612,
    "sigmoid": 4.803835391998291,
    "silu": 1.7881293296813965,
    "swish": 1.7881293296813965,
    "tanh": 1.5939117670059204,
}


class GammaAct(nn.Module):
    """``gamma * act(x)``: an activation rescaled back to unit variance."""

    def __init__(self, act_layer: LayerType = "relu", gamma: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.act = get_act_layer(act_layer)()
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x) * self.gamma


class _AvgDownsample(nn.Module):
    """Shortcut projection: 2x2 average pool (when strided) then a 1x1 scaled-WS conv ``conv``."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, conv_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.pool = (nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                     else nn.Identity())
        self.conv = conv_layer(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class NormFreeBlock(nn.Module):
    """One normalizer-free residual block: ``x + alpha * branch(act(x) * beta)``.

    The shortcut is ``x`` itself, or (when the shape changes) a projection of the *normalised*
    pre-activation ``act(x) * beta``.
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int = 1, alpha: float = 0.2, beta: float = 1.0,
                 bottle_ratio: float = 0.25, group_size: Optional[int] = None, ch_div: int = 8,
                 reg: bool = False, extra_conv: bool = False, skipinit: bool = False,
                 attn_layer: Optional[Callable[..., nn.Module]] = None, attn_gain: float = 2.0,
                 act_layer: Callable[..., nn.Module] = nn.ReLU,
                 conv_layer: Callable[..., nn.Module] = ScaledStdConv2d, drop_path: float = 0.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.attn_gain = attn_gain
        # bottleneck width: from the input (RegNet) or the output (ResNet), then whole groups
        width = make_divisible((in_chs if reg else out_chs) * bottle_ratio, ch_div)
        groups = width // group_size if group_size else 1
        if group_size and group_size % ch_div == 0:
            width = groups * group_size
        self.skipinit_gain = nn.Parameter(torch.zeros(())) if skipinit else None

        needs_proj = in_chs != out_chs or stride != 1
        self.downsample = _AvgDownsample(in_chs, out_chs, stride, conv_layer) if needs_proj else None
        self.act1 = act_layer()
        self.conv1 = conv_layer(in_chs, width, 1)
        self.act2 = act_layer()
        self.conv2 = conv_layer(width, width, 3, stride=stride, groups=groups)
        if extra_conv:
            self.act2b = act_layer()
            self.conv2b = conv_layer(width, width, 3, groups=groups)
        else:
            self.act2b = self.conv2b = None
        self.attn = attn_layer(width) if (attn_layer is not None and reg) else None
        self.act3 = act_layer()
        self.conv3 = conv_layer(width, out_chs, 1, gain_init=1.0 if skipinit else 0.0)
        self.attn_last = attn_layer(out_chs) if (attn_layer is not None and not reg) else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(x) * self.beta
        shortcut = self.downsample(pre) if self.downsample is not None else x
        y = self.conv2(self.act2(self.conv1(pre)))
        if self.conv2b is not None:
            y = self.conv2b(self.act2b(y))
        if self.attn is not None:
            y = self.attn(y) * self.attn_gain
        y = self.conv3(self.act3(y))
        if self.attn_last is not None:
            y = self.attn_last(y) * self.attn_gain
        y = self.drop_path(y)
        if self.skipinit_gain is not None:
            y = y * self.skipinit_gain
        return shortcut + y * self.alpha


def _make_stem(kind: str, in_chans: int, out_chs: int, conv_layer: Callable[..., nn.Module],
               act_layer: Callable[..., nn.Module]) -> tuple[nn.Sequential, int, str, int]:
    """``(stem, stride, name of the feature-map module, its channels)``.

    ``deep_quad``: four 3x3 convs (widths out/8, out/4, out/2, out; strides 2, 1, 1, 2) with
    activations between them; ``3x3``: one stride-2 3x3 conv; ``7x7_pool``: a stride-2 7x7 conv
    and a 3x3 stride-2 max pool. The stem ends without an activation: every block starts with one.
    """
    stem = nn.Sequential()
    if kind == "deep_quad":
        widths, strides = (out_chs // 8, out_chs // 4, out_chs // 2, out_chs), (2, 1, 1, 2)
        prev = in_chans
        for i, (w, s) in enumerate(zip(widths, strides)):
            if i:
                stem.add_module(f"act{i + 1}", act_layer())
            stem.add_module(f"conv{i + 1}", conv_layer(prev, w, 3, stride=s))
            prev = w
        return stem, 4, "conv3", out_chs // 2
    if kind in ("3x3", "7x7", "7x7_pool"):
        k = 3 if kind == "3x3" else 7
        stem.add_module("conv", conv_layer(in_chans, out_chs, k, stride=2))
        if kind.endswith("_pool"):
            stem.add_module("pool", nn.MaxPool2d(3, stride=2, padding=1))
            return stem, 4, "conv", out_chs
        return stem, 2, "conv", out_chs
    raise ValueError(f"unknown NFNet stem {kind!r}")


class NormFreeNet(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """NF-ResNet / NF-RegNet / NFNet: stem -> 4 stages of :class:`NormFreeBlock` -> optional
    1x1 ``final_conv`` -> activation -> pooled classifier."""
    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        depths: Sequence[int] = (1, 2, 6, 3),
        channels: Sequence[int] = (256, 512, 1536, 1536),
        stem: str = "deep_quad",
        stem_chs: Optional[int] = None,
        width_factor: float = 1.0,
        bottle_ratio: float = 0.5,
        group_size: Optional[int] = None,
        ch_div: int = 8,
        reg: bool = False,
        extra_conv: bool = False,
        feat_mult: Optional[float] = None,
        final_chs: Optional[int] = None,
        act_layer: str = "relu",
        gamma_in_act: bool = False,
        same_padding: bool = False,
        std_conv_eps: float = 1e-5,
        skipinit: bool = False,
        attn_layer: LayerType = None,
        attn_kwargs: Optional[dict[str, Any]] = None,
        attn_gain: float = 2.0,
        alpha: float = 0.2,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        gamma = ACT_GAMMA[act_layer]
        conv_kw: dict[str, Any] = dict(eps=std_conv_eps, padding="same" if same_padding else None)
        if gamma_in_act:  # gamma lives in the activation, the convs are unscaled
            act: Callable[..., nn.Module] = partial(GammaAct, act_layer, gamma)
        else:  # gamma folded into every conv's scale, plain activation
            act = get_act_layer(act_layer)
            conv_kw["gamma"] = gamma
        conv_layer = partial(ScaledStdConv2d, **conv_kw)
        attn = get_attn(attn_layer)
        attn = partial(attn, **(attn_kwargs or {})) if attn is not None else None

        def width(c: float) -> int:
            return make_divisible(c * width_factor, ch_div)

        stem_out = width(stem_chs or channels[0])
        self.stem, stride, stem_feat, stem_feat_chs = _make_stem(stem, in_chans, stem_out, conv_layer, act)
        self._stem_feat = stem_feat
        self.feature_info: list[dict[str, Any]] = [
            dict(num_chs=stem_feat_chs, reduction=2, module=f"stem.{stem_feat}")]

        rates = drop_path_rates(drop_path_rate, list(depths))
        prev = stem_out
        var = 1.0  # expected variance of the residual stream entering the next block
        stages = []
        for i, depth in enumerate(depths):
            stage_stride = 1 if (i == 0 and stride > 2) else 2
            stride *= stage_stride
            out = width(channels[i])
            blocks = []
            for j in range(depth):
                blocks.append(NormFreeBlock(
                    prev, out, stride=stage_stride if j == 0 else 1, alpha=alpha, beta=var ** -0.5,
                    bottle_ratio=1.0 if (reg and i == 0 and j == 0) else bottle_ratio, group_size=group_size,
                    ch_div=ch_div, reg=reg, extra_conv=extra_conv, skipinit=skipinit, attn_layer=attn,
                    attn_gain=attn_gain, act_layer=act, conv_layer=conv_layer, drop_path=rates[i][j]))
                # a transition block's output is conv(normalised input) + alpha * branch
                var = (1.0 if j == 0 else var) + alpha ** 2
                prev = out
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=prev, reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)

        if feat_mult or final_chs:
            self.num_features = width(final_chs or int(channels[-1] * feat_mult))
            self.final_conv: nn.Module = conv_layer(prev, self.num_features, 1)
            self.feature_info[-1] = dict(num_chs=self.num_features, reduction=stride, module="final_conv")
        else:
            self.num_features = prev
            self.final_conv = nn.Identity()
        self._final_level = True  # the trunk ends with final_conv (cleared by pruning)
        self.final_act = act()
        self.head_hidden_size = self.num_features
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.final_act(self.final_conv(x))

    # --- FeatureMixin hooks ----------------------------------------------------------------------
    # trunk = stages (+ final_conv); the last level is final_conv's output (stages.3 when there is
    # no final conv), the stem level the output of ``stem.<conv>`` (before the stem's pool).
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        feat = None
        for name, m in self.stem.named_children():
            x = m(x)
            if name == self._stem_feat:
                feat = x
        return x, feat

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.stages) + ([self.final_conv] if self._final_level else [])

    def _level_positions(self) -> list[int]:
        n = len(self.stages)
        if self._final_level:
            return [-1] + list(range(n - 1)) + [n]
        return [-1] + list(range(n))

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if (self.grad_checkpointing and isinstance(stage, nn.Sequential) and not torch.jit.is_scripting()
                and torch.is_grad_enabled()):
            return checkpoint_seq(stage, x)
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        if num_stages > len(self.stages):
            return
        self.stages = self.stages[:num_stages]
        self.final_conv = nn.Identity()
        self._final_level = False


# --- variants ------------------------------------------------------------------------------------
# NFNet-F*: deep 4-conv stem, two grouped 3x3 convs per block (group width 128), SE, GELU, 2x final
_F_DEPTHS = {i: (i + 1, 2 * (i + 1), 6 * (i + 1), 3 * (i + 1)) for i in range(8)}
_nfnet = Variant(NormFreeNet, channels=(256, 512, 1536, 1536), stem="deep_quad", stem_chs=128, group_size=128,
                 bottle_ratio=0.5, extra_conv=True, feat_mult=2.0, act_layer="gelu", attn_layer="se",
                 attn_kwargs=dict(rd_ratio=0.5))
# the DeepMind-ported weights: gamma inside the activation, TF "SAME" padding, SkipInit gains
_dm_nfnet = _nfnet.but(gamma_in_act=True, same_padding=True, skipinit=True)
# NFNet-L*: lighter (group width 64, bottleneck 1/4, SiLU, 1.5x final conv)
_nfnet_l = _nfnet.but(feat_mult=1.5, group_size=64, bottle_ratio=0.25, act_layer="silu",
                      attn_kwargs=dict(rd_ratio=0.25, rd_divisor=8))
# NF-ResNet: 7x7 stem + max pool, ResNet bottleneck (1/4), ReLU, no final conv
_nf_resnet = Variant(NormFreeNet, channels=(256, 512, 1024, 2048), stem="7x7_pool", stem_chs=64, bottle_ratio=0.25,
                     act_layer="relu")
_se16 = dict(attn_layer="se", attn_kwargs=dict(rd_ratio=1 / 16))
# NF-RegNet-B*: grouped (width 8) inverted bottlenecks of 2.25x the input width, SE, SiLU
_nf_regnet = Variant(NormFreeNet, stem="3x3", group_size=8, width_factor=0.75, bottle_ratio=2.25, reg=True,
                     act_layer="silu", attn_layer="se", attn_kwargs=dict(rd_ratio=0.5))


def _regnet(depths: Sequence[int], channels: Sequence[int]) -> Variant:
    return _nf_regnet.but(depths=depths, channels=channels, final_chs=1280 * channels[-1] // 440)


VARIANTS: dict[str, Variant] = {
    **{f"dm_nfnet_f{i}": _dm_nfnet.but(depths=_F_DEPTHS[i]) for i in range(7)},
    # (L1-L3 widen the final conv back to 2x)
    **{f"eca_nfnet_l{i}": _nfnet_l.but(depths=_F_DEPTHS[i], attn_layer="eca", attn_kwargs={},
                                       feat_mult=1.5 if i == 0 else 2.0) for i in range(4)},
    "nf_ecaresnet26": _nf_resnet.but(depths=(2, 2, 2, 2), attn_layer="eca"),
    "nf_ecaresnet50": _nf_resnet.but(depths=(3, 4, 6, 3), attn_layer="eca"),
    "nf_ecaresnet101": _nf_resnet.but(depths=(3, 4, 23, 3), attn_layer="eca"),
    "nf_regnet_b0": _regnet((1, 3, 6, 6), (48, 104, 208, 440)),
    "nf_regnet_b1": _regnet((2, 4, 7, 7), (48, 104, 208, 440)),
    "nf_regnet_b2": _regnet((2, 4, 8, 8), (56, 112, 232, 488)),
    "nf_regnet_b3": _regnet((2, 5, 9, 9), (56, 128, 248, 528)),
    "nf_regnet_b4": _regnet((2, 6, 11, 11), (64, 144, 288, 616)),
    "nf_regnet_b5": _regnet((3, 7, 14, 14), (80, 168, 336, 704)),
    "nf_resnet26": _nf_resnet.but(depths=(2, 2, 2, 2)),
    "nf_resnet50": _nf_resnet.but(depths=(3, 4, 6, 3)),
    "nf_resnet101": _nf_resnet.but(depths=(3, 4, 23, 3)),
    "nf_seresnet26": _nf_resnet.but(depths=(2, 2, 2, 2), **_se16),
    "nf_seresnet50": _nf_resnet.but(depths=(3, 4, 6, 3), **_se16),
    "nf_seresnet101": _nf_resnet.but(depths=(3, 4, 23, 3), **_se16),
    **{f"nfnet_f{i}": _nfnet.but(depths=_F_DEPTHS[i]) for i in range(8)},
    "nfnet_l0": _nfnet_l.but(depths=_F_DEPTHS[0]),
    "test_nfnet": _nfnet_l.but(depths=(1, 1, 1, 1), channels=(32, 64, 96, 128), group_size=8),
}

register_family("nfnet", VARIANTS)
