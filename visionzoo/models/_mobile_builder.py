"""One builder for the whole mobile-block family, driven by compact block definitions.

An architecture is a list of stages; a stage is a list of block definitions, each one line of
space-separated tokens, e.g. ``"ir x2 k5 s2 e6 c40 se0.25"``: an inverted residual repeated twice,
5x5 depthwise kernel, stride 2 (first repeat only), expansion 6, 40 output channels, SE with a
quarter of the input width. Width/depth multipliers, channel rounding, norm/activation/SE/padding
choices live in :class:`MobileArch`, so each published variant is data, not code.

Grammar (first token = block kind, then any of these, in any order)::

    kinds   ds dsa (depthwise-separable; dsa = with pointwise activation), ir (inverted
            residual), cc (CondConv inverted residual), er (edge/fused residual), cn (conv-norm-act),
            uir (universal inverted bottleneck), mqa (mobile multi-query attention)
    xN      repeats                       sN   stride of the first repeat
    kA.B.C  depthwise kernel(s)           eF   expansion ratio
    ekA.B   expansion conv kernel(s)      pkA.B  projection conv kernel(s) (mixed = grouped)
    cN      output channels (scaled)      seF  SE ratio (0 = none)
    gsN     conv group size               fcN  nominal input width for the expansion (scaled)
    nN      CondConv experts              ksN kmN keN  UIB start / mid / end depthwise kernels
    hN kdN vdN kvN dkN  MQA heads, key dim, value dim, kv stride, kv down-conv kernel
    flags   noskip skip s2d relu relu6 swish hswish gelu
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.activations import get_act_layer
from ..layers.helpers import make_divisible
from ..layers.norm_act import get_norm_act_layer
from ..layers.padding import create_conv2d_pad
from .base import FeatureMixin
from ._mobile_blocks import (
    BlockEnv, CondConvResidual, ConvBnAct, DepthwiseSeparableConv, EdgeResidual, GlobalContext, InvertedResidual,
    MobileAttention, SqueezeExcite, UniversalInvertedResidual,
)
from ._mobile_memory import MobileBatchNormAct2d, checkpoint_region

__all__ = ["BlockDef", "parse_block", "scale_stage_depth", "MobileArch", "MobileNetBase", "build_stages",
           "round_channels"]

_KINDS = ("ds", "dsa", "ir", "cc", "er", "cn", "uir", "mqa")
_ACT_FLAGS = {"relu": "relu", "relu6": "relu6", "swish": "swish", "hswish": "hard_swish", "gelu": "gelu"}
_TOKEN = re.compile(r"^([a-z]+)(\d+(?:\.\d+)*|\.\d+)$")


@dataclass(frozen=True)
class BlockDef:
    """One parsed block definition (before width scaling)."""

    kind: str
    repeats: int = 1
    kernel: tuple[int, ...] = (3,)
    exp_kernel: tuple[int, ...] = (1,)
    pw_kernel: tuple[int, ...] = (1,)
    stride: int = 1
    exp_ratio: float = 1.0
    out_chs: int = 0
    se_ratio: float = 0.0
    group_size: int | None = None
    force_in_chs: int = 0
    num_experts: int = 0
    start_kernel: int = 0
    mid_kernel: int = 0
    end_kernel: int = 0
    num_heads: int = 8
    key_dim: int = 64
    value_dim: int = 64
    kv_stride: int = 1
    kv_kernel: int = 3
    skip: bool | None = None
    s2d: bool = False
    act: str | None = None


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in value.split("."))


def parse_block(text: str) -> BlockDef:
    """Parse one definition line (see the module docstring); raises ``ValueError`` on bad tokens."""
    tokens = text.split()
    if not tokens or tokens[0] not in _KINDS:
        raise ValueError(f"block definition {text!r} must start with one of {', '.join(_KINDS)}")
    kw: dict[str, Any] = {"kind": tokens[0]}
    for tok in tokens[1:]:
        if tok in ("noskip", "skip"):
            kw["skip"] = tok == "skip"
            continue
        if tok == "s2d":
            kw["s2d"] = True
            continue
        if tok in _ACT_FLAGS:
            kw["act"] = _ACT_FLAGS[tok]
            continue
        m = _TOKEN.match(tok)
        if not m:
            raise ValueError(f"bad token {tok!r} in block definition {text!r}")
        key, val = m.groups()
        if key == "x":
            kw["repeats"] = int(val)
        elif key in ("k", "ek", "pk"):
            kw[{"k": "kernel", "ek": "exp_kernel", "pk": "pw_kernel"}[key]] = _ints(val)
        elif key in ("s", "c", "gs", "fc", "n", "ks", "km", "ke", "h", "kd", "vd", "kv", "dk"):
            name = {"s": "stride", "c": "out_chs", "gs": "group_size", "fc": "force_in_chs", "n": "num_experts",
                    "ks": "start_kernel", "km": "mid_kernel", "ke": "end_kernel", "h": "num_heads",
                    "kd": "key_dim", "vd": "value_dim", "kv": "kv_stride", "dk": "kv_kernel"}[key]
            kw[name] = int(val)
        elif key == "e":
            kw["exp_ratio"] = float(val)
        elif key == "se":
            kw["se_ratio"] = float(val)
        else:
            raise ValueError(f"unknown token {tok!r} in block definition {text!r}")
    if "out_chs" not in kw:
        raise ValueError(f"block definition {text!r} has no output channels (cN)")
    return BlockDef(**kw)


def scale_stage_depth(repeats: Sequence[int], multiplier: float, trunc: str = "ceil") -> list[int]:
    """Scale a stage's repeats by ``multiplier`` (``ceil`` or ``round`` of the total).

    The scaled total is shared out in proportion to the original repeats, from the last block
    definition backwards, so the later (usually plainer, repeated) definitions absorb the
    extra depth and every definition keeps at least one block.
    """
    total = sum(repeats)
    if trunc == "round":
        target = max(1, round(total * multiplier))
    elif trunc == "ceil":
        target = int(math.ceil(total * multiplier))
    else:
        raise ValueError(f"depth_trunc must be 'ceil' or 'round', got {trunc!r}")
    out: list[int] = []
    for r in reversed(repeats):
        n = max(1, round(r / total * target))
        out.append(n)
        total -= r
        target -= n
    return out[::-1]


def round_channels(channels: float, multiplier: float = 1.0, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Scale a width and round it to a multiple of ``divisor`` (hardware-friendly widths)."""
    return make_divisible(channels * multiplier, divisor, round_limit=round_limit)


# --------------------------------------------------------------------------------------------
# layer factories


def make_norm_act(kind: str = "batchnorm", eps: float = 1e-5, group_size: int | None = None) -> Callable[..., nn.Module]:
    """``factory(chs, act_layer=None, apply_act=True)`` for a norm with its activation inside.

    Batch norm is the mobile variant (running statistics untouched while a checkpointed region is
    recomputed); the rest resolve through the shared ``get_norm_act_layer``."""
    if kind.lower().replace("_", "") == "batchnorm":
        return partial(MobileBatchNormAct2d, eps=eps)
    return get_norm_act_layer(kind, eps=eps, group_size=group_size)


@dataclass(frozen=True)
class SeCfg:
    """How a block's channel attention is sized and gated.

    ``from_mid``: reduce relative to the expanded width (MobileNetV3) rather than the block input
    (EfficientNet); ``divisor``: round the reduced width with ``make_divisible`` (else ``round``);
    ``act``: fixed activation (else the block's); ``round_limit``: how far ``make_divisible`` may
    round down.
    """

    kind: str = "se"
    gate: str = "sigmoid"
    act: str | None = None
    from_mid: bool = False
    divisor: int | None = None
    round_limit: float = 0.9

    def __call__(self, chs: int, in_chs: int, ratio: float, block_act: Callable[..., nn.Module],
                 rd_channels: int | None = None) -> nn.Module:
        if rd_channels is None:
            base = (chs if self.from_mid else in_chs) * ratio
            rd_channels = (round(base) if self.divisor is None
                           else make_divisible(base, self.divisor, round_limit=self.round_limit))
        act = get_act_layer(self.act) if self.act else block_act
        if self.kind == "se":
            return SqueezeExcite(chs, rd_channels, act_layer=act, gate_layer=self.gate)
        if self.kind == "gc":
            return GlobalContext(chs, rd_channels, act_layer=act, gate_layer=self.gate)
        raise ValueError(f"unknown attention {self.kind!r}; use 'se' or 'gc'")


@dataclass(frozen=True)
class MobileArch:
    """A complete mobile-family architecture: block definitions plus the model-wide choices.

    ``head_rule``: how ``head_size`` follows the width multiplier ('scale', 'fixed', or 'max'
    = never below the unscaled size, MobileNetV2). ``mid_divisor``: round expanded widths to a
    multiple (MobileNetV3/V4) instead of ``int(in * e)``. ``overrides``: per-block
    ``(mid, out, se_rd)`` widths of channel-pruned variants (``None`` entries keep the block).
    """

    blocks: tuple[tuple[str, ...], ...]
    width: float = 1.0
    depth: float | tuple[float, ...] = 1.0
    depth_trunc: str = "ceil"
    fix_first_last: bool = False
    divisor: int = 8
    round_limit: float = 0.9
    mid_divisor: int | None = None
    stem_size: int = 32
    stem_kernel: int = 3
    fix_stem: bool = False
    head_size: int = 1280
    head_rule: str = "scale"
    head_bias: bool = True
    head_norm: bool = False
    act: str = "swish"
    norm: str = "batchnorm"
    norm_eps: float = 1e-5
    norm_group_size: int | None = None
    pad: str = ""
    group_size: int | None = None
    se: SeCfg = field(default_factory=SeCfg)
    aa: str | None = None
    layer_scale: float | None = None
    overrides: tuple[tuple[int, int, int] | None, ...] | None = None

    def round_chs(self, chs: int) -> int:
        return round_channels(chs, self.width, self.divisor, self.round_limit)

    @property
    def stem_chs(self) -> int:
        return self.stem_size if self.fix_stem else self.round_chs(self.stem_size)

    @property
    def head_chs(self) -> int:
        if self.head_rule not in ("scale", "fixed", "max"):
            raise ValueError(f"head_rule must be 'scale', 'fixed' or 'max', got {self.head_rule!r}")
        if self.head_size <= 0 or self.head_rule == "fixed":
            return self.head_size
        scaled = self.round_chs(self.head_size)
        return max(self.head_size, scaled) if self.head_rule == "max" else scaled

    def stage_defs(self) -> list[list[BlockDef]]:
        """Parsed definitions with repeats scaled by the depth multiplier (per stage if a tuple)."""
        stages = [[parse_block(s) for s in stage] for stage in self.blocks]
        mults = self.depth if isinstance(self.depth, (tuple, list)) else (self.depth,) * len(stages)
        if len(mults) != len(stages):
            raise ValueError(f"{len(mults)} depth multipliers for {len(stages)} stages")
        out = []
        for i, (defs, mult) in enumerate(zip(stages, mults)):
            if self.fix_first_last and i in (0, len(stages) - 1):
                mult = 1.0
            reps = scale_stage_depth([d.repeats for d in defs], mult, self.depth_trunc)
            out.append([replace(d, repeats=r) for d, r in zip(defs, reps)])
        return out


# --------------------------------------------------------------------------------------------
# building the stages


def make_env(arch: MobileArch) -> BlockEnv:
    """The per-block layer choices of an architecture."""
    return BlockEnv(
        act_layer=get_act_layer(arch.act),
        norm_act=make_norm_act(arch.norm, arch.norm_eps, arch.norm_group_size),
        se_layer=arch.se,
        pad_type=arch.pad,
        aa_layer=arch.aa,
        layer_scale_init=arch.layer_scale,
    )


def _make_block(d: BlockDef, in_chs: int, out_chs: int, arch: MobileArch, env: BlockEnv, *, first: bool,
                stride: int, dilation: int, drop_path: float, override: tuple[int, int, int] | None) -> nn.Module:
    act = get_act_layer(d.act) if d.act else None
    if override is not None and override[2]:
        env = replace(env, se_layer=partial(env.se_layer, rd_channels=override[2]))
    group_size = d.group_size if d.group_size is not None else arch.group_size
    skip = d.skip if d.skip is not None else d.kind != "cn"
    common = dict(stride=stride, dilation=dilation, act_layer=act, drop_path=drop_path, skip=skip)

    def mid(base: int) -> int:
        if override is not None and override[0]:
            return override[0]
        if arch.mid_divisor:
            return make_divisible(base * d.exp_ratio, arch.mid_divisor)
        return int(round(base * d.exp_ratio))

    if d.kind in ("ds", "dsa"):
        return DepthwiseSeparableConv(in_chs, out_chs, env, kernel_size=d.kernel if len(d.kernel) > 1 else d.kernel[0],
                                      group_size=group_size, pw_kernel_size=d.pw_kernel[0], pw_act=d.kind == "dsa",
                                      se_ratio=d.se_ratio, s2d=d.s2d and first, **common)
    if d.kind in ("ir", "cc"):
        cls = CondConvResidual if d.kind == "cc" else InvertedResidual
        extra = dict(num_experts=d.num_experts) if d.kind == "cc" else {}
        return cls(in_chs, out_chs, env, mid_chs=mid(in_chs), kernel_size=d.kernel, group_size=group_size,
                   exp_kernel_size=d.exp_kernel, pw_kernel_size=d.pw_kernel, se_ratio=d.se_ratio, **extra, **common)
    if d.kind == "er":
        base = arch.round_chs(d.force_in_chs) if d.force_in_chs and first else in_chs
        return EdgeResidual(in_chs, out_chs, env, mid_chs=mid(base), kernel_size=d.kernel[0],
                            group_size=d.group_size or 0, pw_kernel_size=d.pw_kernel[0], se_ratio=d.se_ratio,
                            **common)
    if d.kind == "cn":
        return ConvBnAct(in_chs, out_chs, env, kernel_size=d.kernel[0], group_size=d.group_size or 0, **common)
    if d.kind == "uir":
        return UniversalInvertedResidual(in_chs, out_chs, env, mid_chs=mid(in_chs), start_kernel=d.start_kernel,
                                         mid_kernel=d.mid_kernel, end_kernel=d.end_kernel, group_size=group_size,
                                         se_ratio=d.se_ratio, **common)
    if d.kind == "mqa":
        return MobileAttention(in_chs, out_chs, env, num_heads=d.num_heads, key_dim=d.key_dim,
                               value_dim=d.value_dim, kv_stride=d.kv_stride, dw_kernel_size=d.kv_kernel,
                               stride=stride, skip=skip, drop_path=drop_path)
    raise ValueError(f"unknown block kind {d.kind!r}")


def build_stages(arch: MobileArch, in_chs: int, env: BlockEnv, *, output_stride: int = 32,
                 drop_path_rate: float = 0.0) -> tuple[nn.Sequential, list[dict[str, Any]], list[int]]:
    """Build ``blocks`` (a Sequential of stage Sequentials) after a stride-2 stem of ``in_chs``.

    Returns the blocks, the feature info (the stem is a feature level when the first block
    downsamples), and for each feature level the stage index it is taken after (-1 = stem).
    A level is recorded at the end of every stage followed by a downsampling stage, and at the end.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    stages_defs = arch.stage_defs()
    total = sum(d.repeats for defs in stages_defs for d in defs)
    overrides = arch.overrides
    if overrides is not None and len(overrides) != total:
        raise ValueError(f"{len(overrides)} channel overrides for {total} blocks")

    feature_info: list[dict[str, Any]] = []
    feature_stage: list[int] = []
    first_stride = stages_defs[0][0].stride if stages_defs and stages_defs[0] else 1
    if first_stride > 1:
        feature_info.append(dict(num_chs=in_chs, reduction=2, module="bn1"))
        feature_stage.append(-1)

    stages: list[nn.Module] = []
    cur_stride, dilation, idx = 2, 1, 0
    for si, defs in enumerate(stages_defs):
        blocks: list[nn.Module] = []
        for d in defs:
            out_chs = arch.round_chs(d.out_chs) * (4 if d.s2d else 1)
            for r in range(d.repeats):
                stride = d.stride if r == 0 else 1
                block_dilation = dilation
                if stride > 1:
                    if cur_stride * stride > output_stride:
                        dilation *= stride
                        stride = 1
                    else:
                        cur_stride *= stride
                override = overrides[idx] if overrides is not None else None
                block_out = override[1] if override is not None and override[1] else out_chs
                blocks.append(_make_block(d, in_chs, block_out, arch, env, first=r == 0, stride=stride,
                                          dilation=block_dilation, drop_path=drop_path_rate * idx / total,
                                          override=override))
                in_chs = block_out
                idx += 1
        stages.append(nn.Sequential(*blocks))
        nxt = stages_defs[si + 1][0].stride if si + 1 < len(stages_defs) else 0
        if si + 1 == len(stages_defs) or nxt > 1:
            feature_info.append(dict(num_chs=in_chs, reduction=cur_stride, module=f"blocks.{si}"))
            feature_stage.append(si)
    return nn.Sequential(*stages), feature_info, feature_stage


# --------------------------------------------------------------------------------------------
# shared model behaviour


class MobileNetBase(FeatureMixin, nn.Module):
    """Stem + stages; subclasses add their head. Provides the feature / checkpointing interface."""

    # (no class-level annotations: under ``from __future__ import annotations`` TorchScript cannot
    # resolve them; ``blocks``, ``feature_info`` and ``_feature_stage`` are set in ``_build_trunk``)
    selective_recompute = False  # set by memory_efficient="block" (see _mobile_memory)

    def _setup(self, arch: MobileArch, num_classes: int, drop_rate: float,
               **overrides: str | None) -> tuple[MobileArch, BlockEnv]:
        """Apply the constructor's layer overrides (``act``, ``norm``, ``pad``, ``aa``; None keeps the
        architecture's choice) and record the head settings; returns the arch and its layer env."""
        arch = replace(arch, **{k: v for k, v in overrides.items() if v is not None})
        self.arch = arch
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        return arch, make_env(arch)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def _build_trunk(self, arch: MobileArch, in_chans: int, output_stride: int, drop_path_rate: float,
                     env: BlockEnv) -> int:
        stem = arch.stem_chs
        self.conv_stem = create_conv2d_pad(in_chans, stem, arch.stem_kernel, stride=2, padding=arch.pad, bias=False)
        self.bn1 = env.norm_act(stem, act_layer=env.act_layer)
        self.blocks, self.feature_info, self._feature_stage = build_stages(
            arch, stem, env, output_stride=output_stride, drop_path_rate=drop_path_rate)
        self.grad_checkpointing = False
        self.selective_recompute = False  # an instance attribute, which TorchScript can read
        return self.feature_info[-1]["num_chs"]

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        # the memory modes are eager-only: TorchScript does not compile the is_scripting-guarded branch
        if self.selective_recompute and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._stem_recompute(x)
        return self.bn1(self.conv_stem(x))

    @torch.jit.unused
    def _stem_recompute(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint_region(lambda t: self.bn1(self.conv_stem(t)), x, selective=True)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_region(stage, x)
        return stage(x)

    def _forward_head_features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem(x)
        # stages run here rather than through ``_run_stage``: TorchScript has no module-typed parameters
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            for stage in self.blocks:
                x = checkpoint_region(stage, x)
        else:
            x = self.blocks(x)
        return self._forward_head_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # --- FeatureMixin hooks: levels are the stage ends listed in ``_feature_stage`` ------------
    _stem_level = False

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self._stem(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _level_positions(self) -> list[int]:
        return [p for p in self._feature_stage if p < len(self.blocks)]

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_head_features(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
