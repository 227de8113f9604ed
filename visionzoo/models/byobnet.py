"""Bring-your-own-blocks networks: one builder for nets declared as stage specs.

A net is a :class:`NetSpec` (stem, stage list, head, layer choices) whose stages are
:class:`BlockSpec` runs (block type, depth, width, stride, group size, bottleneck ratio, attention).
The same builder then serves

* RepVGG (Ding et al., 2021): ``3x3+BN``, ``1x1+BN`` and identity-BN branches summed;
* MobileOne (Vasu et al., 2023): ``k`` over-parameterised ``kxk+BN`` branches, a ``1x1+BN`` scale
  branch and an identity BN, in depthwise/pointwise pairs;
* GENet / GerNet (Lin et al., 2020): basic blocks early, depthwise bottlenecks late;
* ResNet-like nets with SE / ECA / global-context / BAT attention, RegNetZ, the CLIP ResNets
  (anti-aliased avg-pool downsampling and an attention-pool head);
* the self-attention hybrids of ``byoanet`` (bottleneck / halo / lambda attention blocks).

RepVGG and MobileOne blocks fold their training-time branches into one conv with
``reparameterize()`` (``ByobNet.reparameterize()`` does every block; ``visionzoo.optimize`` calls it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import get_act_layer
from ..layers.attention_pool2d import AttentionPool2d
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath
from ..layers.global_context import GlobalContext
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.helpers import make_divisible, to_2tuple
from ..layers.non_local_attn import BatNonLocalAttn
from ..layers.norm import get_norm_layer
from ..layers.bottleneck_attn import BottleneckAttn
from ..layers.halo_attn import HaloAttn
from ..layers.lambda_layer import LambdaLayer
from ..layers.norm_act import BatchNormAct2d, get_norm_act_layer
from ..layers.pool import ClassifierHead, NormMlpClassifierHead
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.squeeze_excite import EcaModule, SEModule
from .base import FeatureMixin, Variant, register_family

__all__ = ["BlockSpec", "NetSpec", "ByobNet", "RepVggBlock", "MobileOneBlock", "BasicBlock", "BottleneckBlock",
           "DarkBlock", "EdgeBlock", "SelfAttnBlock", "register_self_attn", "VARIANTS"]


# --------------------------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class BlockSpec:
    """``depth`` blocks of ``type`` with ``chs`` output channels; the first one strides.

    ``group_size``: channels per group of the grouped conv (0 = dense, 1 = depthwise);
    ``alt_groups``: RepVGG-gN, every second block of a stage uses this many groups instead;
    ``bottle``: mid-width ratio; ``attn``/``self_attn``: override the net's layer (name or None);
    ``kwargs``: extra block arguments (e.g. ``num_branches``, ``kernel_size``, ``extra_conv``).
    """

    type: str
    depth: int
    chs: int
    stride: int = 2
    group_size: int = 0
    bottle: float = 1.0
    alt_groups: int = 0
    attn: Optional[str] = None
    attn_kwargs: Optional[Mapping[str, Any]] = None
    self_attn: Optional[str] = None
    self_attn_kwargs: Optional[Mapping[str, Any]] = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)


Stage = Union[BlockSpec, Sequence[BlockSpec]]


@dataclass(frozen=True)
class NetSpec:
    """A whole net. ``stem_type``: ``'3x3'``/``'7x7'`` (one conv), ``'tiered'``/``'deep'``/``'quad'``/
    ``'quad2'`` (conv stacks), ``''`` with a tuple ``stem_chs``, ``'rep'``/``'one'`` (a RepVGG /
    MobileOne block). ``stem_pool``: ``'maxpool'``, ``'avg2'`` or ``''``. ``downsample``: shortcut
    projection ``'conv1x1'``, ``'avg'`` (avg-pool + 1x1) or ``''`` (no residual where shapes
    change). ``norm``: a norm name (``'evonorms0a'`` carries its activation). ``head``:
    ``'classifier'``, ``'mlp'`` (norm + hidden layer) or ``'attn_abs'`` (CLIP attention pool)."""

    blocks: tuple[Stage, ...]
    downsample: str = "conv1x1"
    stem_type: str = "3x3"
    stem_pool: str = "maxpool"
    stem_chs: Union[int, tuple[int, ...]] = 32
    width_factor: float = 1.0
    num_features: int = 0
    zero_init_last: bool = True
    fixed_input_size: bool = False
    act: str = "relu"
    norm: str = "batchnorm"
    norm_kwargs: Optional[Mapping[str, Any]] = None
    aa: Optional[str] = None
    head: str = "classifier"
    head_hidden_size: Optional[int] = None
    attn: Optional[str] = None
    attn_kwargs: Optional[Mapping[str, Any]] = None
    self_attn: Optional[str] = None
    self_attn_kwargs: Optional[Mapping[str, Any]] = None
    block_kwargs: Optional[Mapping[str, Any]] = None

    def but(self, **changes: Any) -> "NetSpec":
        return replace(self, **changes)


# --------------------------------------------------------------------------------------------
# layer choices shared by every block of a net

_NORM_ACTS = {"evonorms0", "evonorms0a"}  # norms with the nonlinearity inside

_ATTN: dict[str, Callable[..., nn.Module]] = {
    "se": SEModule,
    "eca": EcaModule,
    "gc": GlobalContext,
    "gca": partial(GlobalContext, fuse_add=True, fuse_scale=False),
    "bat": BatNonLocalAttn,
}

_SELF_ATTN: dict[str, Callable[..., nn.Module]] = {
    "bottleneck": BottleneckAttn,
    "halo": HaloAttn,
    "lambda": LambdaLayer,
}


def register_self_attn(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make a spatial self-attention layer available to ``self_attn`` blocks by name."""
    _SELF_ATTN[name] = factory


class _AvgAA(nn.Module):
    """Anti-aliasing by ``stride x stride`` average pooling after a stride-1 conv (CLIP ResNets)."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class LayerEnv:
    """Builds the conv-norm-act units, channel attention and self-attention of one net."""

    def __init__(self, spec: NetSpec, attn: Optional[str], attn_kwargs: Optional[Mapping[str, Any]],
                 self_attn: Optional[str] = None, self_attn_kwargs: Optional[Mapping[str, Any]] = None) -> None:
        self.act_layer = get_act_layer(spec.act)
        norm_name = spec.norm.lower().replace("_", "") if isinstance(spec.norm, str) else ""
        self.norm_is_act = norm_name in _NORM_ACTS
        self.norm_kwargs = dict(spec.norm_kwargs or {})
        self.norm_layer = get_norm_act_layer(spec.norm) if self.norm_is_act else get_norm_layer(spec.norm)
        self.aa_layer = _AvgAA if spec.aa == "avg" else None
        if spec.aa not in (None, "", "avg"):
            raise ValueError(f"unsupported aa layer {spec.aa!r}")
        self.attn_name, self.attn_kwargs = attn, dict(attn_kwargs or {})
        self.self_attn_name, self.self_attn_kwargs = self_attn, dict(self_attn_kwargs or {})

    def cna(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, dilation: int = 1,
            groups: int = 1, apply_act: bool = True, aa: bool = False) -> ConvNormAct:
        if self.norm_is_act:
            norm = partial(self.norm_layer, apply_act=apply_act, **self.norm_kwargs)
            return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups,
                               norm_layer=norm, act_layer=None)
        return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation, groups=groups,
                           norm_layer=self.norm_layer, act_layer=self.act_layer, apply_act=apply_act,
                           aa_layer=self.aa_layer if aa else None, norm_kwargs=self.norm_kwargs or None)

    def norm_act(self, chs: int, apply_act: bool = True) -> nn.Module:
        """A bare norm (+ activation) on ``chs`` channels (post-attention norm of self-attn blocks)."""
        if self.norm_is_act:
            return self.norm_layer(chs, apply_act=apply_act, **self.norm_kwargs)
        if self.norm_layer in (nn.BatchNorm2d, get_norm_layer("batchnorm")):
            return BatchNormAct2d(chs, apply_act=apply_act, act_layer=self.act_layer, **self.norm_kwargs)
        raise ValueError(f"no norm-act layer for {self.norm_layer}")

    def act(self) -> nn.Module:
        return self.act_layer()

    def attn(self, chs: int) -> Optional[nn.Module]:
        if not self.attn_name:
            return None
        if self.attn_name not in _ATTN:
            raise ValueError(f"unknown attention layer {self.attn_name!r}; known: {', '.join(_ATTN)}")
        return _ATTN[self.attn_name](chs, **self.attn_kwargs)

    def self_attn(self, chs: int, **kwargs: Any) -> nn.Module:
        name = self.self_attn_name
        if not name or name not in _SELF_ATTN:
            raise ValueError(f"unknown self-attention layer {name!r}; known: {', '.join(_SELF_ATTN)}")
        return _SELF_ATTN[name](chs, **{**self.self_attn_kwargs, **kwargs})


def _groups(group_size: int, chs: int) -> int:
    if not group_size:
        return 1
    if chs % group_size:
        raise ValueError(f"{chs} channels are not divisible into groups of {group_size}")
    return chs // group_size


def _or_identity(m: Optional[nn.Module]) -> nn.Module:
    return nn.Identity() if m is None else m


class _AvgDownsample(nn.Module):
    """Shortcut projection: ``2x2`` average pool (when striding) then ``1x1`` conv + norm."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, dilation: int, env: LayerEnv) -> None:
        super().__init__()
        if stride > 1 or dilation > 1:
            self.pool: nn.Module = nn.AvgPool2d(2, stride if dilation == 1 else 1, ceil_mode=True,
                                                count_include_pad=False)
        else:
            self.pool = nn.Identity()
        self.conv = env.cna(in_chs, out_chs, 1, apply_act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


def _shortcut(kind: str, in_chs: int, out_chs: int, stride: int, dilation: tuple[int, int],
              env: LayerEnv) -> Optional[nn.Module]:
    """Identity when shapes match; else the ``kind`` projection, or None (no residual) for ``''``."""
    if in_chs == out_chs and stride == 1 and dilation[0] == dilation[1]:
        return nn.Identity()
    if not kind:
        return None
    if kind == "avg":
        return _AvgDownsample(in_chs, out_chs, stride, dilation[0], env)
    return env.cna(in_chs, out_chs, 1, stride=stride, dilation=dilation[0], apply_act=False)


# --------------------------------------------------------------------------------------------
# blocks


class _ResidualBlock(nn.Module):
    """Common tail: ``act(drop_path(body(x)) + shortcut(x))``."""

    def _finish(self, x: torch.Tensor, shortcut_in: torch.Tensor) -> torch.Tensor:
        x = self.drop_path(x)
        if self.shortcut is not None:
            x = x + self.shortcut(shortcut_in)
        return self.act(x)

    def _tail(self, env: LayerEnv, drop_path_rate: float, linear_out: bool) -> None:
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.act = nn.Identity() if linear_out else env.act()


class BasicBlock(_ResidualBlock):
    """``kxk -> kxk`` (ResNet basic block, GENet's early stages)."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1), group_size: int = 0, bottle: float = 1.0,
                 downsample: str = "avg", attn_last: bool = True, linear_out: bool = False,
                 drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        mid = make_divisible(out_chs * bottle)
        self.shortcut = _shortcut(downsample, in_chs, out_chs, stride, dilation, env)
        self.conv1_kxk = env.cna(in_chs, mid, kernel_size, stride=stride, dilation=dilation[0], aa=True)
        self.attn = _or_identity(None if attn_last else env.attn(mid))
        self.conv2_kxk = env.cna(mid, out_chs, kernel_size, dilation=dilation[1], groups=_groups(group_size, mid),
                                 apply_act=False)
        self.attn_last = _or_identity(env.attn(out_chs) if attn_last else None)
        self._tail(env, drop_path_rate, linear_out)

    def zero_init_last(self) -> None:
        _zero_bn(self.conv2_kxk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn_last(self.conv2_kxk(self.attn(self.conv1_kxk(x))))
        return self._finish(y, x)


class BottleneckBlock(_ResidualBlock):
    """``1x1 -> kxk (grouped) [-> kxk] -> 1x1`` (ResNet/ResNeXt bottleneck, RegNetZ with ``bottle_in``)."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1), group_size: int = 0, bottle: float = 1.0,
                 downsample: str = "avg", attn_last: bool = False, linear_out: bool = False,
                 extra_conv: bool = False, bottle_in: bool = False, drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        mid = make_divisible((in_chs if bottle_in else out_chs) * bottle)
        groups = _groups(group_size, mid)
        self.shortcut = _shortcut(downsample, in_chs, out_chs, stride, dilation, env)
        self.conv1_1x1 = env.cna(in_chs, mid, 1)
        self.conv2_kxk = env.cna(mid, mid, kernel_size, stride=stride, dilation=dilation[0], groups=groups, aa=True)
        self.conv2b_kxk = (env.cna(mid, mid, kernel_size, dilation=dilation[1], groups=groups) if extra_conv
                           else nn.Identity())
        self.attn = _or_identity(None if attn_last else env.attn(mid))
        self.conv3_1x1 = env.cna(mid, out_chs, 1, apply_act=False)
        self.attn_last = _or_identity(env.attn(out_chs) if attn_last else None)
        self._tail(env, drop_path_rate, linear_out)

    def zero_init_last(self) -> None:
        _zero_bn(self.conv3_1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2b_kxk(self.conv2_kxk(self.conv1_1x1(x)))
        y = self.attn_last(self.conv3_1x1(self.attn(y)))
        return self._finish(y, x)


class DarkBlock(_ResidualBlock):
    """``1x1 -> kxk`` (CSPDarkNet-style)."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1), group_size: int = 0, bottle: float = 1.0,
                 downsample: str = "avg", attn_last: bool = True, linear_out: bool = False,
                 drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        mid = make_divisible(out_chs * bottle)
        self.shortcut = _shortcut(downsample, in_chs, out_chs, stride, dilation, env)
        self.conv1_1x1 = env.cna(in_chs, mid, 1)
        self.attn = _or_identity(None if attn_last else env.attn(mid))
        self.conv2_kxk = env.cna(mid, out_chs, kernel_size, stride=stride, dilation=dilation[0],
                                 groups=_groups(group_size, mid), apply_act=False, aa=True)
        self.attn_last = _or_identity(env.attn(out_chs) if attn_last else None)
        self._tail(env, drop_path_rate, linear_out)

    def zero_init_last(self) -> None:
        _zero_bn(self.conv2_kxk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn_last(self.conv2_kxk(self.attn(self.conv1_1x1(x))))
        return self._finish(y, x)


class EdgeBlock(_ResidualBlock):
    """``kxk -> 1x1`` (EfficientNet-EdgeTPU style fused expansion)."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1), group_size: int = 0, bottle: float = 1.0,
                 downsample: str = "avg", attn_last: bool = False, linear_out: bool = False,
                 drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        mid = make_divisible(out_chs * bottle)
        self.shortcut = _shortcut(downsample, in_chs, out_chs, stride, dilation, env)
        self.conv1_kxk = env.cna(in_chs, mid, kernel_size, stride=stride, dilation=dilation[0],
                                 groups=_groups(group_size, mid), aa=True)
        self.attn = _or_identity(None if attn_last else env.attn(mid))
        self.conv2_1x1 = env.cna(mid, out_chs, 1, apply_act=False)
        self.attn_last = _or_identity(env.attn(out_chs) if attn_last else None)
        self._tail(env, drop_path_rate, linear_out)

    def zero_init_last(self) -> None:
        _zero_bn(self.conv2_1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn_last(self.conv2_1x1(self.attn(self.conv1_kxk(x))))
        return self._finish(y, x)


class SelfAttnBlock(_ResidualBlock):
    """``1x1 [-> kxk] -> spatial self-attention -> norm-act -> 1x1`` (BoTNet / HaloNet / LambdaNet)."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1), group_size: int = 0, bottle: float = 1.0,
                 downsample: str = "avg", extra_conv: bool = False, linear_out: bool = False,
                 bottle_in: bool = False, post_attn_na: bool = True, feat_size: Optional[tuple[int, int]] = None,
                 drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        mid = make_divisible((in_chs if bottle_in else out_chs) * bottle)
        groups = _groups(group_size, mid)
        self.shortcut = _shortcut(downsample, in_chs, out_chs, stride, dilation, env)
        self.conv1_1x1 = env.cna(in_chs, mid, 1)
        if extra_conv:
            self.conv2_kxk: nn.Module = env.cna(mid, mid, kernel_size, stride=stride, dilation=dilation[0],
                                                groups=groups)
            stride = 1  # striding done by the conv
        else:
            self.conv2_kxk = nn.Identity()
        kw: dict[str, Any] = dict(stride=stride)
        if feat_size is not None:
            kw["feat_size"] = feat_size
        self.self_attn = env.self_attn(mid, **kw)
        self.post_attn = env.norm_act(mid) if post_attn_na else nn.Identity()
        self.conv3_1x1 = env.cna(mid, out_chs, 1, apply_act=False)
        self._tail(env, drop_path_rate, linear_out)

    def zero_init_last(self) -> None:
        _zero_bn(self.conv3_1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.self_attn(self.conv2_kxk(self.conv1_1x1(x)))
        y = self.conv3_1x1(self.post_attn(y))
        return self._finish(y, x)


def _zero_bn(cna: nn.Module) -> None:
    bn = getattr(cna, "bn", None)
    if isinstance(bn, nn.BatchNorm2d):
        nn.init.zeros_(bn.weight)


# --- re-parameterisable blocks ----------------------------------------------------------------


def _fold_conv_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of ``bn(conv(x))`` for an eval-mode BatchNorm."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _pad_to(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Centre a smaller (odd) kernel inside a ``k x k`` one."""
    p = (k - kernel.shape[-1]) // 2
    return F.pad(kernel, (p, p, p, p)) if p > 0 else kernel


def _identity_kernel(chs: int, groups: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """The ``k x k`` grouped-conv kernel that copies its input."""
    per_group = chs // groups
    kernel = torch.zeros(chs, per_group, k, k, dtype=like.dtype, device=like.device)
    idx = torch.arange(chs, device=like.device)
    kernel[idx, idx % per_group, k // 2, k // 2] = 1.0
    return kernel


class _RepBlock(nn.Module):
    """Shared re-parameterisation: sum the branches' folded (kernel, bias) into ``reparam_conv``."""

    def _branches(self) -> list[tuple[nn.Module, str]]:
        raise NotImplementedError

    def _fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        ref = self._ref_conv()
        k = ref.kernel_size[0]
        kernel = torch.zeros_like(ref.weight)
        bias = torch.zeros(ref.out_channels, dtype=ref.weight.dtype, device=ref.weight.device)
        for branch in self._conv_branches():
            w, b = _fold_conv_bn(branch.conv.weight, branch.bn)
            kernel, bias = kernel + _pad_to(w, k), bias + b
        if self.identity is not None:
            w, b = _fold_conv_bn(_identity_kernel(ref.out_channels, ref.groups, k, ref.weight), self.identity)
            kernel, bias = kernel + w, bias + b
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold every training-time branch into one ``reparam_conv`` (inference only)."""
        if self.reparam_conv is not None:
            return
        for branch in self._conv_branches():
            if not isinstance(branch.bn, nn.BatchNorm2d) or not isinstance(branch.act, nn.Identity):
                raise RuntimeError("reparameterize() needs plain BatchNorm branches without activation")
        ref = self._ref_conv()
        kernel, bias = self._fused_kernel_bias()
        conv = nn.Conv2d(ref.in_channels, ref.out_channels, ref.kernel_size, stride=ref.stride, padding=ref.padding,
                         dilation=ref.dilation, groups=ref.groups, bias=True, device=kernel.device, dtype=kernel.dtype)
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        self._drop_branches()
        self.reparam_conv = conv


class RepVggBlock(_RepBlock):
    """RepVGG block: ``act(attn(bn(kxk(x)) + bn(1x1(x)) + bn(x)))``, foldable to one ``kxk`` conv."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1), group_size: int = 0, groups: int = 0,
                 drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        groups = groups or _groups(group_size, in_chs)
        use_identity = in_chs == out_chs and stride == 1 and dilation[0] == dilation[1]
        self.identity = nn.BatchNorm2d(out_chs) if use_identity else None
        self.conv_kxk = env.cna(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation[0], groups=groups,
                                apply_act=False)
        self.conv_1x1 = env.cna(in_chs, out_chs, 1, stride=stride, groups=groups, apply_act=False)
        self.attn = _or_identity(env.attn(out_chs))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and use_identity else nn.Identity()
        self.act = env.act()
        self.reparam_conv = None

    def _ref_conv(self) -> nn.Conv2d:
        return self.conv_kxk.conv

    def _conv_branches(self) -> list[nn.Module]:
        return [self.conv_kxk, self.conv_1x1]

    def _drop_branches(self) -> None:
        self.conv_kxk = None
        self.conv_1x1 = None
        self.identity = None
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.attn(self.reparam_conv(x)))
        y = self.drop_path(self.conv_kxk(x) + self.conv_1x1(x))
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(self.attn(y))


class MobileOneBlock(_RepBlock):
    """MobileOne block: ``num_branches`` ``kxk+BN`` branches, a ``1x1+BN`` scale branch (k > 1) and
    an identity BN, summed; foldable to one ``kxk`` conv."""

    def __init__(self, in_chs: int, out_chs: int, *, env: LayerEnv, kernel_size: int = 3, stride: int = 1,
                 dilation: tuple[int, int] = (1, 1), group_size: int = 0, num_branches: int = 1,
                 drop_path_rate: float = 0.0, **_: Any) -> None:
        super().__init__()
        groups = _groups(group_size, in_chs)
        use_identity = in_chs == out_chs and stride == 1 and dilation[0] == dilation[1]
        self.identity = nn.BatchNorm2d(out_chs) if use_identity else None
        self.conv_kxk = nn.ModuleList([
            env.cna(in_chs, out_chs, kernel_size, stride=stride, dilation=dilation[0], groups=groups, apply_act=False)
            for _ in range(num_branches)])
        self.conv_scale = (env.cna(in_chs, out_chs, 1, stride=stride, groups=groups, apply_act=False)
                           if kernel_size > 1 else None)
        self.attn = _or_identity(env.attn(out_chs))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 and use_identity else nn.Identity()
        self.act = env.act()
        self.reparam_conv = None

    def _ref_conv(self) -> nn.Conv2d:
        return self.conv_kxk[0].conv

    def _conv_branches(self) -> list[nn.Module]:
        return list(self.conv_kxk) + ([self.conv_scale] if self.conv_scale is not None else [])

    def _drop_branches(self) -> None:
        self.conv_kxk = None
        self.conv_scale = None
        self.identity = None
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.attn(self.reparam_conv(x)))
        y = torch.zeros(1, dtype=x.dtype, device=x.device)  # broadcasts; the branches add onto it
        if self.conv_scale is not None:
            y = self.conv_scale(x)
        for conv in self.conv_kxk:
            y = y + conv(x)
        y = self.drop_path(y)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(self.attn(y))


_BLOCKS: dict[str, type] = {
    "basic": BasicBlock,
    "bottle": BottleneckBlock,
    "dark": DarkBlock,
    "edge": EdgeBlock,
    "rep": RepVggBlock,
    "one": MobileOneBlock,
    "self_attn": SelfAttnBlock,
}


# --------------------------------------------------------------------------------------------
# stem


class ConvStem(nn.Sequential):
    """A stack of 3x3 convs (``conv1``, ``conv2``, ...) and an optional ``pool``.

    The first conv strides; with no pool and a total stride of 4, the last conv strides too.
    ``num_act`` < number of convs leaves the first convs bare (no norm, no activation).
    ``feat_idx`` is the child whose output is the stem's feature level (the map before the last
    reduction).
    """

    def __init__(self, in_chs: int, chs: Sequence[int], env: LayerEnv, pool: str = "", stride: int = 4,
                 num_act: Optional[int] = None, kernel_size: int = 3) -> None:
        super().__init__()
        n = len(chs)
        strides = [2] + [1] * (n - 1)
        if stride == 4 and not pool:
            strides[-1] = 2
        num_act = n if num_act is None else num_act
        prev, reduction, feat = in_chs, 1, None
        self.feature_info: list[dict[str, Any]] = []
        for i, (c, s) in enumerate(zip(chs, strides)):
            if i > 0 and s > 1:
                self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"stem.conv{i}"))
                feat = i - 1
            if i >= n - num_act:
                layer: nn.Module = env.cna(prev, c, kernel_size, stride=s)
            else:
                layer = nn.Conv2d(prev, c, kernel_size, stride=s, padding=kernel_size // 2, bias=False)
            self.add_module(f"conv{i + 1}", layer)
            prev, reduction = c, reduction * s
        if pool:
            self.feature_info.append(dict(num_chs=prev, reduction=reduction, module=f"stem.conv{n}"))
            feat = n - 1
            if "max" in pool:
                self.add_module("pool", nn.MaxPool2d(3, 2, 1))
            else:
                self.add_module("pool", nn.AvgPool2d(2))
            reduction *= 2
        self.feat_idx = feat
        self.out_chs, self.reduction = prev, reduction

    def forward_with_feature(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = x
        for i, m in enumerate(self):
            x = m(x)
            if i == self.feat_idx:
                feat = x
        return x, feat


def _make_stem(spec: NetSpec, in_chans: int, env: LayerEnv) -> tuple[nn.Module, int, list[dict[str, Any]]]:
    """(stem, out channels, stem feature_info) — the last feature entry is the stem output itself."""
    st, pool = spec.stem_type, spec.stem_pool
    chs = spec.stem_chs
    if isinstance(chs, int):
        chs = int(round(chs * spec.width_factor))
    if st == "rep":
        stem: nn.Module = RepVggBlock(in_chans, chs, env=env, stride=2)
        return stem, chs, [dict(num_chs=chs, reduction=2, module="stem")]
    if st == "one":
        no_attn = LayerEnv(spec, None, None)
        stem = MobileOneBlock(in_chans, chs, env=no_attn, stride=2)
        return stem, chs, [dict(num_chs=chs, reduction=2, module="stem")]
    num_act = None
    if st in ("tiered", "deep", "quad", "quad2") and isinstance(chs, int):
        c = chs
        chs = {"tiered": (3 * c // 8, c // 2, c), "deep": (c // 2, c // 2, c),
               "quad": (c // 8, c // 4, c // 2, c), "quad2": (c // 8, c // 4, c // 2, c)}[st]
    if st == "quad2":
        num_act = 2
    if isinstance(chs, int) and not pool:
        k = 7 if st == "7x7" else 3
        stem = env.cna(in_chans, chs, k, stride=2)
        return stem, chs, [dict(num_chs=chs, reduction=2, module="stem")]
    if isinstance(chs, int):
        chs = (chs,)
    stem = ConvStem(in_chans, chs, env, pool=pool, stride=4, num_act=num_act, kernel_size=7 if st == "7x7" else 3)
    info = stem.feature_info + [dict(num_chs=stem.out_chs, reduction=stem.reduction, module="stem")]
    return stem, stem.out_chs, info


# --------------------------------------------------------------------------------------------
# the net


def _stage_specs(stage: Stage) -> list[BlockSpec]:
    return [stage] if isinstance(stage, BlockSpec) else list(stage)


class ByobNet(FeatureMixin, nn.Module):
    """A net built from a :class:`NetSpec`: stem -> stages -> ``final_conv`` -> head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, cfg: NetSpec, num_classes: int = 1000, in_chans: int = 3, global_pool: Optional[str] = None,
                 output_stride: int = 32, img_size: Optional[Union[int, tuple[int, int]]] = None,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, zero_init_last: Optional[bool] = None) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        img_hw = to_2tuple(img_size) if img_size is not None else None
        env = LayerEnv(cfg, cfg.attn, cfg.attn_kwargs, cfg.self_attn, cfg.self_attn_kwargs)

        self.stem, prev, stem_info = _make_stem(cfg, in_chans, env)
        self.feature_info: list[dict[str, Any]] = list(stem_info[:-1])
        prev_feat = stem_info[-1]
        reduction = prev_feat["reduction"]
        feat_hw = tuple(s // reduction for s in img_hw) if img_hw else None

        stages_specs = [_stage_specs(s) for s in cfg.blocks]
        depths = [sum(b.depth for b in s) for s in stages_specs]
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        dilation, block_i = 1, 0
        stages: list[nn.Module] = []
        for si, specs in enumerate(stages_specs):
            stride = specs[0].stride
            if stride != 1:
                self.feature_info.append(prev_feat)
            if reduction >= output_stride and stride > 1:
                dilation *= stride
                stride = 1
            reduction *= stride
            first_dilation = 1 if dilation in (1, 2) else 2
            blocks: list[nn.Module] = []
            bi = 0
            for bs in specs:
                out_chs = int(round(bs.chs * cfg.width_factor))
                benv = env
                if bs.attn is not None or bs.self_attn is not None or bs.attn_kwargs or bs.self_attn_kwargs:
                    benv = LayerEnv(cfg, bs.attn if bs.attn is not None else cfg.attn,
                                    bs.attn_kwargs if bs.attn_kwargs is not None else cfg.attn_kwargs,
                                    bs.self_attn if bs.self_attn is not None else cfg.self_attn,
                                    bs.self_attn_kwargs if bs.self_attn_kwargs is not None else cfg.self_attn_kwargs)
                for _ in range(bs.depth):
                    s = stride if bi == 0 else 1
                    kw = dict(cfg.block_kwargs or {})
                    kw.update(bs.kwargs)
                    if bs.alt_groups and bi % 2 == 1:
                        kw["groups"] = bs.alt_groups
                    if bs.type == "self_attn" and feat_hw is not None:
                        kw["feat_size"] = feat_hw  # the block's input size
                    blocks.append(_BLOCKS[bs.type](
                        prev, out_chs, env=benv, stride=s,
                        dilation=(first_dilation if bi == 0 else dilation, dilation),
                        group_size=bs.group_size, bottle=bs.bottle, downsample=cfg.downsample,
                        drop_path_rate=dpr[block_i], **kw))
                    if feat_hw is not None and s > 1:
                        feat_hw = tuple(h // s for h in feat_hw)
                    prev = out_chs
                    bi += 1
                    block_i += 1
            stages.append(nn.Sequential(*blocks))
            prev_feat = dict(num_chs=prev, reduction=reduction, module=f"stages.{si}")
        self.stages = nn.Sequential(*stages)

        if cfg.num_features:
            self.num_features = int(round(cfg.width_factor * cfg.num_features))
            self.final_conv: nn.Module = env.cna(prev, self.num_features, 1)
        else:
            self.num_features = prev
            self.final_conv = nn.Identity()
        self.feature_info.append(dict(num_chs=self.num_features, reduction=reduction, module="final_conv"))
        self._final_level = True

        self.head_type = cfg.head
        if cfg.head == "attn_abs":
            if img_hw is None:
                raise ValueError("an attention-pool head needs img_size")
            self.head: nn.Module = AttentionPool2d(self.num_features, feat_size=feat_hw or (7, 7),
                                                   out_features=num_classes, embed_dim=cfg.head_hidden_size,
                                                   pool_type=global_pool or "token", drop_rate=drop_rate)
            self.head_hidden_size = self.head.embed_dim
        elif cfg.head == "mlp":
            self.head = NormMlpClassifierHead(self.num_features, num_classes, hidden_size=cfg.head_hidden_size,
                                              pool_type=global_pool if global_pool is not None else "avg",
                                              norm_layer=env.norm_layer if not env.norm_is_act else "layernorm2d",
                                              act_layer=env.act_layer, drop_rate=drop_rate)
            self.head_hidden_size = self.head.num_features
        else:
            self.head = ClassifierHead(self.num_features, num_classes,
                                       pool_type=global_pool if global_pool is not None else "avg",
                                       drop_rate=drop_rate)
            self.head_hidden_size = self.num_features
        self._init_weights(cfg.zero_init_last if zero_init_last is None else zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample the attention-pool position embedding when the model's ``img_size`` differs."""
        key = "head.pos_embed"
        head = getattr(model, "head", None)
        if key in state_dict and isinstance(head, AttentionPool2d) and state_dict[key].shape != head.pos_embed.shape:
            state_dict = dict(state_dict)
            state_dict[key] = resample_abs_pos_embed(state_dict[key].unsqueeze(0), head.feat_size,
                                                     num_prefix_tokens=1)[0]
        return state_dict

    # --- re-parameterisation ---------------------------------------------------------------
    @torch.no_grad()
    def reparameterize(self) -> "ByobNet":
        """Fold every RepVGG / MobileOne block (stem included) into single convs, in place."""
        for m in list(self.modules()):
            if m is not self and hasattr(m, "reparameterize"):
                m.reparameterize()
        return self

    # --- classifier ------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head.proj if isinstance(self.head, AttentionPool2d) else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if isinstance(self.head, AttentionPool2d):
            if global_pool == "" or (global_pool is not None and global_pool not in ("token", "avg")):
                self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool,
                                           drop_rate=self.drop_rate)
                self.head_hidden_size = self.num_features
                return
            self.head.reset(num_classes, global_pool)
            return
        self.head.reset(num_classes, global_pool)

    # --- forward -----------------------------------------------------------------------------
    def _stem_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(self.stem, ConvStem):
            return self.stem.forward_with_feature(x)
        x = self.stem(x)
        return x, x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.final_conv(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # --- FeatureMixin hooks: trunk = stages (+ final_conv); levels from feature_info ---------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._stem_forward(x)

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.stages) + ([self.final_conv] if self._final_level else [])

    def _level_positions(self) -> list[int]:
        n = len(self._feature_stages())
        out = []
        for info in self.feature_info:
            mod = info["module"]
            pos = -1 if mod.startswith("stem") else len(self.stages) if mod == "final_conv" else int(mod.split(".")[1])
            if pos >= n or (mod == "final_conv" and not self._final_level):
                break
            out.append(pos)
        return out

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_module(stage, x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        if num_stages <= len(self.stages):
            self.stages = self.stages[:num_stages]
            self.final_conv = nn.Identity()
            self._final_level = False


# --------------------------------------------------------------------------------------------
# variants

B = BlockSpec


def _repvgg(depths: Sequence[int], wf: Sequence[float], groups: int = 0, **kw: Any) -> NetSpec:
    chs = (64, 128, 256, 512)
    blocks = tuple(B("rep", d, int(c * w), alt_groups=groups) for d, c, w in zip(depths, chs, wf))
    return NetSpec(blocks=blocks, stem_type="rep", stem_chs=int(min(64, 64 * wf[0])), **kw)


def _mobileone(wf: Sequence[float], branches: int = 1, se_blocks: Sequence[int] = (0, 0, 0, 0)) -> NetSpec:
    depths, chs = (2, 8, 10, 1), (64, 128, 256, 512)
    prev = int(min(64, 64 * wf[0]))
    stages = []
    for d, c, w, se in zip(depths, chs, wf, se_blocks):
        out = int(c * w)
        specs = []
        for i in range(d):
            attn = "se" if i >= d - se else None
            specs.append(B("one", 1, prev, group_size=1, attn=attn, kwargs=dict(num_branches=branches)))
            specs.append(B("one", 1, out, group_size=0, attn=attn, kwargs=dict(num_branches=branches, kernel_size=1)))
            prev = out
        stages.append(tuple(specs))
    return NetSpec(blocks=tuple(stages), stem_type="one", stem_chs=int(min(64, 64 * wf[0])))


def _resnet_blocks(depths: Sequence[int], chs: Sequence[int] = (256, 512, 1024, 2048), group_size: int = 0,
                   bottle: float = 0.25) -> tuple[BlockSpec, ...]:
    return tuple(B("bottle", d, c, 1 if i == 0 else 2, group_size, bottle) for i, (d, c) in enumerate(zip(depths, chs)))


def _v(cfg: NetSpec, **kw: Any) -> Variant:
    return Variant(ByobNet, cfg=cfg, **kw)


_gernet = dict(stem_chs=32, stem_pool="", num_features=2560)
_GERNET_L = NetSpec(blocks=(B("basic", 1, 128), B("basic", 2, 192), B("bottle", 6, 640, bottle=0.25),
                            B("bottle", 5, 640, group_size=1, bottle=3.0), B("bottle", 4, 640, 1, 1, 3.0)), **_gernet)
_GERNET_M = NetSpec(blocks=(B("basic", 1, 128), B("basic", 2, 192), B("bottle", 6, 640, bottle=0.25),
                            B("bottle", 4, 640, group_size=1, bottle=3.0), B("bottle", 1, 640, 1, 1, 3.0)), **_gernet)
_GERNET_S = NetSpec(blocks=(B("basic", 1, 48), B("basic", 3, 48), B("bottle", 7, 384, bottle=0.25),
                            B("bottle", 2, 560, group_size=1, bottle=3.0), B("bottle", 1, 256, 1, 1, 3.0)),
                    stem_chs=13, stem_pool="", num_features=1920)

_ts33 = NetSpec(blocks=_resnet_blocks((2, 3, 3, 2), (256, 512, 1536, 1536)), stem_chs=64, stem_type="tiered",
                stem_pool="", num_features=1280, act="silu")
_rx26 = NetSpec(blocks=_resnet_blocks((2, 2, 2, 2), group_size=32), stem_chs=64, stem_type="tiered",
                stem_pool="maxpool", act="silu")
_r50t = NetSpec(blocks=_resnet_blocks((3, 4, 6, 3)), stem_chs=64, stem_type="tiered", stem_pool="")
_q_tail = (B("bottle", 4, 512, 2, 32, 0.25), B("bottle", 6, 1536, 2, 32, 0.25), B("bottle", 4, 1536, 2, 1, 1.0))
_R51Q = NetSpec(blocks=(B("bottle", 2, 256, 1, 32, 0.25),) + _q_tail, stem_chs=128, stem_type="quad2",
                stem_pool="", num_features=2048, act="silu")
_R61Q = NetSpec(blocks=(B("edge", 1, 256, 1, 0, 1.0),) + _q_tail, stem_chs=128, stem_type="quad", stem_pool="",
                num_features=2048, act="silu", block_kwargs=dict(extra_conv=True))

_rz = dict(stem_pool="", downsample="", act="silu", attn="se", attn_kwargs=dict(rd_ratio=0.25),
           block_kwargs=dict(bottle_in=True, linear_out=True))


def _regnetz(depths, chs, group_size, bottle, stride0=2, **kw) -> NetSpec:
    blocks = tuple(B("bottle", d, c, stride0 if i == 0 else 2, group_size, bottle)
                   for i, (d, c) in enumerate(zip(depths, chs)))
    return NetSpec(blocks=blocks, **{**_rz, **kw})


_RZ_B16 = _regnetz((2, 6, 12, 2), (48, 96, 192, 288), 16, 3.0, stem_chs=32, num_features=1536)
_RZ_C16 = _regnetz((2, 6, 12, 2), (48, 96, 192, 288), 16, 4.0, stem_chs=32, num_features=1536)
_rz_d = dict(stride0=1, stem_chs=64, stem_type="tiered", num_features=1792)
_RZ_D32 = _regnetz((3, 6, 12, 3), (64, 128, 256, 384), 32, 4.0, **_rz_d)
_RZ_D8 = _regnetz((3, 6, 12, 3), (64, 128, 256, 384), 8, 4.0, **_rz_d)
_RZ_E8 = _regnetz((3, 8, 16, 3), (96, 192, 384, 512), 8, 4.0, stride0=1, stem_chs=64, stem_type="tiered",
                  num_features=2048)
_evos = dict(norm="evonorms0a", norm_kwargs=dict(group_size=16))

_clip = dict(stem_type="", stem_pool="avg2", downsample="avg", aa="avg", head="attn_abs")
_CLIP50 = NetSpec(blocks=_resnet_blocks((3, 4, 6, 3)), stem_chs=(32, 32, 64), **_clip)
_CLIP101 = NetSpec(blocks=_resnet_blocks((3, 4, 23, 3)), stem_chs=(32, 32, 64), **_clip)
_CLIP50X4 = NetSpec(blocks=_resnet_blocks((4, 6, 10, 6), (320, 640, 1280, 2560)), stem_chs=(40, 40, 80), **_clip)
_CLIP50X16 = NetSpec(blocks=_resnet_blocks((6, 8, 18, 8), (384, 768, 1536, 3072)), stem_chs=(48, 48, 96), **_clip)
_CLIP50X64 = NetSpec(blocks=_resnet_blocks((3, 15, 36, 10), (512, 1024, 2048, 4096)), stem_chs=(64, 64, 128),
                     **_clip)

_TEST = NetSpec(blocks=(B("edge", 1, 32, 2, 0, 0.5), B("dark", 1, 64, 2, 0, 0.5), B("basic", 1, 128, 2, 32, 0.25),
                        B("bottle", 1, 256, 2, 64, 0.25)),
                stem_chs=24, downsample="avg", stem_pool="", attn="se", attn_kwargs=dict(rd_ratio=0.25))


def _clip_v(cfg: NetSpec, img: int, gap: bool = False) -> Variant:
    if gap:
        return _v(cfg.but(head="classifier"), img_size=img)
    return _v(cfg, img_size=img)


VARIANTS: dict[str, Variant] = {
    "gernet_l": _v(_GERNET_L),
    "gernet_m": _v(_GERNET_M),
    "gernet_s": _v(_GERNET_S),
    "repvgg_a0": _v(_repvgg((2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5))),
    "repvgg_a1": _v(_repvgg((2, 4, 14, 1), (1, 1, 1, 2.5))),
    "repvgg_a2": _v(_repvgg((2, 4, 14, 1), (1.5, 1.5, 1.5, 2.75))),
    "repvgg_b0": _v(_repvgg((4, 6, 16, 1), (1, 1, 1, 2.5))),
    "repvgg_b1": _v(_repvgg((4, 6, 16, 1), (2, 2, 2, 4))),
    "repvgg_b1g4": _v(_repvgg((4, 6, 16, 1), (2, 2, 2, 4), groups=4)),
    "repvgg_b2": _v(_repvgg((4, 6, 16, 1), (2.5, 2.5, 2.5, 5))),
    "repvgg_b2g4": _v(_repvgg((4, 6, 16, 1), (2.5, 2.5, 2.5, 5), groups=4)),
    "repvgg_b3": _v(_repvgg((4, 6, 16, 1), (3, 3, 3, 5))),
    "repvgg_b3g4": _v(_repvgg((4, 6, 16, 1), (3, 3, 3, 5), groups=4)),
    "repvgg_d2se": _v(_repvgg((8, 14, 24, 1), (2.5, 2.5, 2.5, 5), attn="se",
                              attn_kwargs=dict(rd_ratio=0.0625, rd_divisor=1))),
    "resnet32ts": _v(_ts33.but(num_features=0)),
    "resnet33ts": _v(_ts33),
    "gcresnet33ts": _v(_ts33.but(attn="gca")),
    "seresnet33ts": _v(_ts33.but(attn="se")),
    "eca_resnet33ts": _v(_ts33.but(attn="eca")),
    "gcresnet50t": _v(_r50t.but(attn="gca")),
    "resnext26ts": _v(_rx26),
    "gcresnext26ts": _v(_rx26.but(attn="gca")),
    "seresnext26ts": _v(_rx26.but(attn="se")),
    "eca_resnext26ts": _v(_rx26.but(attn="eca")),
    "bat_resnext26ts": _v(_rx26.but(attn="bat", attn_kwargs=dict(block_size=8))),
    "gcresnext50ts": _v(_r50t.but(blocks=_resnet_blocks((3, 4, 6, 3), group_size=32), stem_pool="maxpool",
                                  act="silu", attn="gca")),
    "resnet51q": _v(_R51Q),
    "resnet61q": _v(_R61Q),
    "regnetz_b16": _v(_RZ_B16),
    "regnetz_c16": _v(_RZ_C16),
    "regnetz_d32": _v(_RZ_D32),
    "regnetz_d8": _v(_RZ_D8),
    "regnetz_e8": _v(_RZ_E8),
    "regnetz_b16_evos": _v(_RZ_B16.but(**_evos)),
    "regnetz_c16_evos": _v(_RZ_C16.but(**_evos)),
    "regnetz_d8_evos": _v(_RZ_D8.but(stem_chs=(64, 64, 64), stem_type="deep", **_evos)),
    "mobileone_s0": _v(_mobileone((0.75, 1.0, 1.0, 2.0), branches=4)),
    "mobileone_s1": _v(_mobileone((1.5, 1.5, 2.0, 2.5))),
    "mobileone_s2": _v(_mobileone((1.5, 2.0, 2.5, 4.0))),
    "mobileone_s3": _v(_mobileone((2.0, 2.5, 3.0, 4.0))),
    "mobileone_s4": _v(_mobileone((3.0, 3.5, 3.5, 4.0), se_blocks=(0, 0, 5, 1))),
    "resnet50_clip": _clip_v(_CLIP50, 224),
    "resnet101_clip": _clip_v(_CLIP101, 224),
    "resnet50x4_clip": _clip_v(_CLIP50X4, 288),
    "resnet50x16_clip": _clip_v(_CLIP50X16, 384),
    "resnet50x64_clip": _clip_v(_CLIP50X64, 448),
    "resnet50_clip_gap": _clip_v(_CLIP50, 224, gap=True),
    "resnet101_clip_gap": _clip_v(_CLIP101, 224, gap=True),
    "resnet50x4_clip_gap": _clip_v(_CLIP50X4, 288, gap=True),
    "resnet50x16_clip_gap": _clip_v(_CLIP50X16, 384, gap=True),
    "resnet50x64_clip_gap": _clip_v(_CLIP50X64, 448, gap=True),
    "resnet50_mlp": _v(_CLIP50.but(head="mlp", head_hidden_size=1024), img_size=256),
    "test_byobnet": _v(_TEST),
}

register_family("byobnet", VARIANTS)
