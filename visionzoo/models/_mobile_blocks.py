"""Blocks of the mobile-network family (MobileNet V1-V4, MnasNet, FBNet, MixNet, EfficientNet V1/V2,
LCNet, TinyNet), shared by ``efficientnet.py`` and ``mobilenetv3.py``.

Every block takes resolved channel counts and a :class:`BlockEnv` (norm/act/SE/padding choices
of the model), so one builder drives all of them. State-dict names follow the published
checkpoints: ``conv_pw``/``conv_dw``/``conv_pwl`` with ``bn1..bn3`` for inverted residuals,
``conv_exp`` for edge (fused) residuals, ``dw_start``/``pw_exp``/``dw_mid``/``pw_proj`` for the
universal inverted bottleneck, ``norm``/``attn`` for mobile attention.

Papers: MobileNetV2 (Sandler et al., 2018, https://arxiv.org/abs/1801.04381), MobileNetV3
(Howard et al., 2019, https://arxiv.org/abs/1905.02244), EfficientNet (Tan & Le, 2019,
https://arxiv.org/abs/1905.11946), EfficientNet-EdgeTPU (Gupta & Tan, 2019), EfficientNetV2
(Tan & Le, 2021, https://arxiv.org/abs/2104.00298), MobileNetV4 (Qin et al., 2024,
https://arxiv.org/abs/2404.10518), EfficientNet-X (Li et al., 2021,
https://arxiv.org/abs/2102.05610).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, create_act_layer
from ..layers.blur_pool import create_aa as _create_aa
from ..layers.cond_conv import CondConv2d
from ..layers.config import use_fused_attn
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath
from ..layers.layer_scale import LayerScale2d
from ..layers.mixed_conv import MixedConv2d
from ..layers.norm_act import LayerNormAct2d
from ..layers.padding import create_conv2d_pad
from ._mobile_memory import checkpoint_region

__all__ = [
    "BlockEnv", "SqueezeExcite", "GlobalContext", "ConvBnAct", "DepthwiseSeparableConv", "InvertedResidual",
    "CondConvResidual", "EdgeResidual", "UniversalInvertedResidual", "MobileAttention", "MultiQueryAttention2d",
    "create_conv", "create_aa", "LayerNormAct2d",
]


# --------------------------------------------------------------------------------------------
# small helpers


def create_conv(in_chs: int, out_chs: int, kernel_size: int | Sequence[int], *, stride: int = 1,
                dilation: int = 1, groups: int = 1, padding: str = "", num_experts: int = 0,
                depthwise: bool = False) -> nn.Module:
    """A bias-free conv: mixed kernels (MixConv) for a kernel list, CondConv with experts."""
    if isinstance(kernel_size, (list, tuple)):
        if len(kernel_size) > 1:
            if num_experts:
                raise ValueError("mixed kernels and CondConv experts cannot be combined")
            return MixedConv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation,
                               depthwise=depthwise)
        kernel_size = kernel_size[0]
    if num_experts:
        return CondConv2d(in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation,
                          groups=groups, num_experts=num_experts)
    return create_conv2d_pad(in_chs, out_chs, kernel_size, stride=stride, padding=padding, dilation=dilation,
                             groups=groups, bias=False)


def _groups(channels: int, group_size: int | None) -> int:
    """Groups of a conv from a channels-per-group size; ``None``/``0`` means depthwise."""
    if not group_size:
        return channels
    if channels % group_size:
        raise ValueError(f"{channels} channels are not divisible into groups of {group_size}")
    return channels // group_size


def create_aa(aa_layer: str | None, channels: int, stride: int) -> nn.Module:
    """Anti-aliased downsampling after a stride-1 conv ('avg', 'blur', 'blurpc'); Identity if none."""
    if not aa_layer or stride == 1:
        return nn.Identity()
    return _create_aa(aa_layer, channels=channels, stride=stride)


# --------------------------------------------------------------------------------------------
# channel attention


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation with 1x1 convs ``conv_reduce``/``conv_expand`` (Hu et al., 2018)."""

    def __init__(self, channels: int, rd_channels: int, act_layer: LayerType = nn.ReLU,
                 gate_layer: LayerType = "sigmoid") -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act1 = create_act_layer(act_layer)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * self.gate(s)


class _ConvMlp(nn.Module):
    """``fc1 -> norm -> act -> fc2`` with 1x1 convs (the transform of a global-context block)."""

    def __init__(self, channels: int, hidden: int, act_layer: LayerType, norm_eps: float) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.norm = LayerNormAct2d(hidden, eps=norm_eps, apply_act=False)
        self.act = create_act_layer(act_layer)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(x))))


class GlobalContext(nn.Module):
    """Global context block (Cao et al., 2019, GCNet, https://arxiv.org/abs/1904.11492).

    Like SE, but the squeeze is an attention-weighted (softmax over positions) pooling, and the
    excitation MLP is layer-normalised; fused by scaling (sigmoid gate).
    """

    def __init__(self, channels: int, rd_channels: int, act_layer: LayerType = nn.ReLU,
                 gate_layer: LayerType = "sigmoid", norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.conv_attn = nn.Conv2d(channels, 1, 1, bias=True)
        self.mlp_scale = _ConvMlp(channels, rd_channels, act_layer, norm_eps)
        self.gate = create_act_layer(gate_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = self.conv_attn(x).reshape(b, 1, h * w).softmax(dim=-1)           # B, 1, HW
        context = torch.bmm(x.reshape(b, c, h * w), attn.transpose(1, 2))      # B, C, 1
        return x * self.gate(self.mlp_scale(context.view(b, c, 1, 1)))


# --------------------------------------------------------------------------------------------
# the model-wide choices every block needs


@dataclass
class BlockEnv:
    """Per-model layer choices, resolved once by the builder and handed to every block.

    ``norm_act(chs, act_layer=..., apply_act=...)`` builds a norm with the activation inside (one
    state-dict prefix, e.g. ``bn1``); ``se_layer(chs, in_chs, se_ratio, act_layer)`` builds the
    block's channel attention (or ``None``).
    """

    act_layer: Callable[..., nn.Module]
    norm_act: Callable[..., nn.Module]
    se_layer: Callable[..., nn.Module | None]
    pad_type: str = ""
    aa_layer: str | None = None
    layer_scale_init: float | None = None


def _attn(env: BlockEnv, chs: int, in_chs: int, se_ratio: float, act_layer: Callable[..., nn.Module]) -> nn.Module:
    if not se_ratio:
        return nn.Identity()
    return env.se_layer(chs, in_chs, se_ratio, act_layer) or nn.Identity()


class _MobileBlock(nn.Module):
    """Shared block behaviour: the residual shortcut and the memory-saving switches.

    ``selective_recompute``: in training, keep only conv outputs and recompute the rest in
    backward; ``inplace_add``: add the shortcut in place (only where no saved tensor is touched).
    """

    # class defaults, copied to the instance by ``_init_skip`` (TorchScript sees instance
    # attributes only, and cannot resolve class annotations under ``from __future__ import annotations``)
    inplace_add = False
    selective_recompute = False
    _inplace_safe = True  # the branch ends in a norm/scale whose output backward never reads

    def _init_skip(self, in_chs: int, out_chs: int, stride: int, skip: bool, drop_path: float) -> None:
        self.inplace_add = self.inplace_add
        self.selective_recompute = self.selective_recompute
        self._inplace_safe = self._inplace_safe  # the class's unless the block set its own
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path > 0 else nn.Identity()

    def _add(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        if not self.has_skip:
            return x
        x = self.drop_path(x)
        return x.add_(shortcut) if self.inplace_add and self._inplace_safe else x + shortcut

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # selective recompute is eager-only: TorchScript does not compile the checkpointed branch
        if self.selective_recompute and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_region(self._forward, x, selective=True)
        return self._forward(x)


# --------------------------------------------------------------------------------------------
# blocks


class ConvBnAct(_MobileBlock):
    """``conv -> norm+act`` (the "fused" first stage of EfficientNetV2, MobileNetV3's last conv)."""

    _inplace_safe = False  # the activation output may be kept for its backward (ReLU)

    def __init__(self, in_chs: int, out_chs: int, env: BlockEnv, *, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1, group_size: int | None = 0, skip: bool = False,
                 act_layer: Callable[..., nn.Module] | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        act_layer = act_layer or env.act_layer
        use_aa = bool(env.aa_layer) and stride > 1
        self.conv = create_conv(in_chs, out_chs, kernel_size, stride=1 if use_aa else stride, dilation=dilation,
                                groups=_groups(in_chs, group_size) if group_size else 1, padding=env.pad_type)
        self.bn1 = env.norm_act(out_chs, act_layer=act_layer)
        self.aa = create_aa(env.aa_layer if use_aa else None, out_chs, stride)
        self._init_skip(in_chs, out_chs, stride, skip, drop_path)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._add(self.aa(self.bn1(self.conv(x))), x)


class DepthwiseSeparableConv(_MobileBlock):
    """Depthwise conv -> norm+act -> (SE) -> pointwise conv -> norm (MobileNetV1, EfficientNet stage 0).

    With ``s2d`` (EfficientNet-X) a 2x2 stride-2 conv first folds space into 4x the channels
    ("space-to-depth"), and the depthwise kernel shrinks to match the halved resolution.
    """

    def __init__(self, in_chs: int, out_chs: int, env: BlockEnv, *, kernel_size: int | Sequence[int] = 3,
                 stride: int = 1, dilation: int = 1, group_size: int | None = None, pw_kernel_size: int = 1,
                 pw_act: bool = False, se_ratio: float = 0.0, skip: bool = True, s2d: bool = False,
                 act_layer: Callable[..., nn.Module] | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        act_layer = act_layer or env.act_layer
        dw_chs, dw_pad = in_chs, env.pad_type
        if s2d:
            dw_chs = in_chs * 4
            self.conv_s2d = create_conv(in_chs, dw_chs, 2, stride=2, padding="same")
            self.bn_s2d = env.norm_act(dw_chs, act_layer=act_layer)
            kernel_size, dw_stride, dw_pad = (kernel_size + 1) // 2, 1, "same"
        else:
            dw_stride = stride
        use_aa = bool(env.aa_layer) and dw_stride > 1
        self.conv_dw = create_conv(dw_chs, dw_chs, kernel_size, stride=1 if use_aa else dw_stride, dilation=dilation,
                                   groups=_groups(dw_chs, group_size), padding=dw_pad, depthwise=True)
        self.bn1 = env.norm_act(dw_chs, act_layer=act_layer)
        self.aa = create_aa(env.aa_layer if use_aa else None, dw_chs, dw_stride)
        self.se = _attn(env, dw_chs, in_chs, se_ratio, act_layer)
        self.conv_pw = create_conv(dw_chs, out_chs, pw_kernel_size, padding=env.pad_type)
        self.bn2 = env.norm_act(out_chs, act_layer=act_layer, apply_act=pw_act)
        self._inplace_safe = not pw_act
        self._init_skip(in_chs, out_chs, stride, skip, drop_path)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if hasattr(self, "conv_s2d"):
            x = self.bn_s2d(self.conv_s2d(x))
        x = self.aa(self.bn1(self.conv_dw(x)))
        x = self.bn2(self.conv_pw(self.se(x)))
        return self._add(x, shortcut)


class InvertedResidual(_MobileBlock):
    """Inverted residual (MBConv): 1x1 expand -> depthwise -> (SE) -> 1x1 linear projection."""

    def __init__(self, in_chs: int, out_chs: int, env: BlockEnv, *, mid_chs: int,
                 kernel_size: int | Sequence[int] = 3, stride: int = 1, dilation: int = 1,
                 group_size: int | None = None, exp_kernel_size: int | Sequence[int] = 1,
                 pw_kernel_size: int | Sequence[int] = 1, se_ratio: float = 0.0, skip: bool = True,
                 act_layer: Callable[..., nn.Module] | None = None, num_experts: int = 0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        act_layer = act_layer or env.act_layer
        use_aa = bool(env.aa_layer) and stride > 1
        conv = partial(create_conv, padding=env.pad_type, num_experts=num_experts)
        self.conv_pw = conv(in_chs, mid_chs, exp_kernel_size)
        self.bn1 = env.norm_act(mid_chs, act_layer=act_layer)
        self.conv_dw = conv(mid_chs, mid_chs, kernel_size, stride=1 if use_aa else stride, dilation=dilation,
                            groups=_groups(mid_chs, group_size), depthwise=True)
        self.bn2 = env.norm_act(mid_chs, act_layer=act_layer)
        self.aa = create_aa(env.aa_layer if use_aa else None, mid_chs, stride)
        self.se = _attn(env, mid_chs, in_chs, se_ratio, act_layer)
        self.conv_pwl = conv(mid_chs, out_chs, pw_kernel_size)
        self.bn3 = env.norm_act(out_chs, apply_act=False)
        self._init_skip(in_chs, out_chs, stride, skip, drop_path)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn1(self.conv_pw(x))
        x = self.aa(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(self.se(x)))
        return self._add(x, shortcut)


class CondConvResidual(InvertedResidual):
    """Inverted residual whose three convs are CondConvs routed by the pooled block input."""

    def __init__(self, in_chs: int, out_chs: int, env: BlockEnv, *, num_experts: int, **kwargs: Any) -> None:
        super().__init__(in_chs, out_chs, env, num_experts=num_experts, **kwargs)
        self.routing_fn = nn.Linear(in_chs, num_experts)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        routing = torch.sigmoid(self.routing_fn(x.mean((2, 3))))
        x = self.bn1(self.conv_pw(x, routing))
        x = self.aa(self.bn2(self.conv_dw(x, routing)))
        x = self.bn3(self.conv_pwl(self.se(x), routing))
        return self._add(x, shortcut)


class EdgeResidual(_MobileBlock):
    """Edge / fused-MBConv residual: a full kxk expansion conv replaces 1x1 + depthwise.

    ``force_in_chs`` sizes the expansion from a nominal input width (EdgeTPU, EfficientNet-X).
    """

    def __init__(self, in_chs: int, out_chs: int, env: BlockEnv, *, mid_chs: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, group_size: int | None = 0,
                 pw_kernel_size: int = 1, se_ratio: float = 0.0, skip: bool = True,
                 act_layer: Callable[..., nn.Module] | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        act_layer = act_layer or env.act_layer
        use_aa = bool(env.aa_layer) and stride > 1
        self.conv_exp = create_conv(in_chs, mid_chs, kernel_size, stride=1 if use_aa else stride, dilation=dilation,
                                    groups=_groups(in_chs, group_size) if group_size else 1, padding=env.pad_type)
        self.bn1 = env.norm_act(mid_chs, act_layer=act_layer)
        self.aa = create_aa(env.aa_layer if use_aa else None, mid_chs, stride)
        self.se = _attn(env, mid_chs, in_chs, se_ratio, act_layer)
        self.conv_pwl = create_conv(mid_chs, out_chs, pw_kernel_size, padding=env.pad_type)
        self.bn2 = env.norm_act(out_chs, apply_act=False)
        self._init_skip(in_chs, out_chs, stride, skip, drop_path)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.aa(self.bn1(self.conv_exp(x)))
        x = self.bn2(self.conv_pwl(self.se(x)))
        return self._add(x, shortcut)


class UniversalInvertedResidual(_MobileBlock):
    """MobileNetV4's UIB: optional depthwise convs before and after the 1x1 expansion.

    Start+mid depthwise is "ExtraDW", mid only is the classic inverted bottleneck, start only is
    ConvNeXt-like, neither is a plain FFN. The stride sits on the mid depthwise when present.
    """

    def __init__(self, in_chs: int, out_chs: int, env: BlockEnv, *, mid_chs: int, start_kernel: int = 0,
                 mid_kernel: int = 0, end_kernel: int = 0, stride: int = 1, dilation: int = 1,
                 group_size: int | None = None, se_ratio: float = 0.0, skip: bool = True,
                 act_layer: Callable[..., nn.Module] | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        act_layer = act_layer or env.act_layer
        cna = partial(ConvNormAct, padding=env.pad_type, act_layer=None, bias=False)

        def norm(act: bool) -> Callable[..., nn.Module]:
            return partial(env.norm_act, act_layer=act_layer, apply_act=act)

        def aa(stride_here: int) -> Callable[..., nn.Module] | None:
            if env.aa_layer and stride_here > 1:
                return partial(create_aa, env.aa_layer)
            return None

        if start_kernel:
            s = stride if not mid_kernel else 1
            self.dw_start: nn.Module = cna(in_chs, in_chs, start_kernel, stride=s, dilation=dilation,
                                           groups=_groups(in_chs, group_size), norm_layer=norm(False), aa_layer=aa(s))
        else:
            self.dw_start = nn.Identity()
        self.pw_exp = cna(in_chs, mid_chs, 1, norm_layer=norm(True))
        if mid_kernel:
            self.dw_mid: nn.Module = cna(mid_chs, mid_chs, mid_kernel, stride=stride, dilation=dilation,
                                         groups=_groups(mid_chs, group_size), norm_layer=norm(True),
                                         aa_layer=aa(stride))
        else:
            self.dw_mid = nn.Identity()
        self.se = _attn(env, mid_chs, in_chs, se_ratio, act_layer)
        self.pw_proj = cna(mid_chs, out_chs, 1, norm_layer=norm(False))
        if end_kernel:
            s = stride if not (start_kernel or mid_kernel) else 1
            self.dw_end: nn.Module = cna(out_chs, out_chs, end_kernel, stride=s, dilation=dilation,
                                         groups=_groups(out_chs, group_size), norm_layer=norm(False), aa_layer=aa(s))
        else:
            self.dw_end = nn.Identity()
        init = env.layer_scale_init
        self.layer_scale = LayerScale2d(out_chs, init) if init is not None else nn.Identity()
        self._init_skip(in_chs, out_chs, stride, skip, drop_path)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.pw_exp(self.dw_start(x))
        x = self.se(self.dw_mid(x))
        x = self.layer_scale(self.dw_end(self.pw_proj(x)))
        return self._add(x, shortcut)


class MultiQueryAttention2d(nn.Module):
    """Multi-query attention on NCHW maps (Shazeer, 2019; MobileNetV4's "Mobile MQA").

    All heads share one key and one value projection; keys/values may be computed on a map
    downsampled by a strided depthwise conv (``kv_stride``), which makes attention affordable
    at high resolution.
    """

    def __init__(self, dim: int, dim_out: int, *, num_heads: int = 8, key_dim: int = 64, value_dim: int = 64,
                 kv_stride: int = 1, dw_kernel_size: int = 3, padding: str = "",
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.scale = key_dim ** -0.5
        self.fused_attn = use_fused_attn()

        def kv_branch(out: int) -> nn.Sequential:
            seq = nn.Sequential()
            if kv_stride > 1:
                seq.add_module("down_conv", create_conv2d_pad(dim, dim, dw_kernel_size, stride=kv_stride,
                                                              padding=padding, groups=dim, bias=False))
                seq.add_module("norm", norm_layer(dim))
            seq.add_module("proj", nn.Conv2d(dim, out, 1, bias=False))
            return seq

        self.query = nn.Sequential()
        self.query.add_module("proj", nn.Conv2d(dim, num_heads * key_dim, 1, bias=False))
        self.key = kv_branch(key_dim)
        self.value = kv_branch(value_dim)
        self.output = nn.Sequential()
        self.output.add_module("proj", nn.Conv2d(num_heads * value_dim, dim_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.query(x).reshape(b, self.num_heads, self.key_dim, h * w).transpose(-1, -2)  # B, nh, N, kd
        k = self.key(x).reshape(b, 1, self.key_dim, -1).transpose(-1, -2)                 # B, 1, M, kd
        v = self.value(x).reshape(b, 1, self.value_dim, -1).transpose(-1, -2)             # B, 1, M, vd
        if self.fused_attn:
            o = F.scaled_dot_product_attention(q, k.expand(-1, self.num_heads, -1, -1),
                                               v.expand(-1, self.num_heads, -1, -1))
        else:
            o = ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1) @ v
        o = o.transpose(1, 2).reshape(b, h, w, self.num_heads * self.value_dim).permute(0, 3, 1, 2)
        return self.output(o)


class MobileAttention(_MobileBlock):
    """MobileNetV4 hybrid block: norm -> multi-query attention -> layer scale, residual."""

    def __init__(self, in_chs: int, out_chs: int, env: BlockEnv, *, num_heads: int = 8, key_dim: int = 64,
                 value_dim: int = 64, kv_stride: int = 1, dw_kernel_size: int = 3, stride: int = 1,
                 skip: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        if stride != 1:
            raise ValueError("MobileAttention supports stride 1 only")
        self.norm = env.norm_act(in_chs, apply_act=False)
        self.attn = MultiQueryAttention2d(in_chs, out_chs, num_heads=num_heads, key_dim=key_dim,
                                          value_dim=value_dim, kv_stride=kv_stride, dw_kernel_size=dw_kernel_size,
                                          padding=env.pad_type, norm_layer=partial(env.norm_act, apply_act=False))
        init = env.layer_scale_init
        self.layer_scale = LayerScale2d(out_chs, init) if init is not None else nn.Identity()
        self._init_skip(in_chs, out_chs, stride, skip, drop_path)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._add(self.layer_scale(self.attn(self.norm(x))), x)
