"""Aligned Xception: the modified Xception of DeepLabv3+ (Chen et al., 2018), "Encoder-Decoder with
Atrous Separable Convolution for Semantic Image Segmentation". https://arxiv.org/abs/1802.02611

Xception (Chollet, 2017) with every max-pool replaced by a strided depthwise-separable conv, a
deeper middle flow (8 / 16 units) and BN after every depthwise and pointwise conv, so that each
block has the same structure (three separable convs, the last one strided, plus a projection or
identity shortcut) and can run atrous for a smaller ``output_stride``. The ``p`` variants are the
pre-activation form: the block normalises and activates its input once, each later separable
conv starts with norm + act, and the convs carry no norm of their own.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..layers.activations import LayerType, get_act_layer
from ..layers.conv_norm_act import ConvNormAct
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.norm_act import BatchNormAct2d
from ..layers.padding import create_conv2d_pad
from ..layers.pool import ClassifierHead
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["XceptionAligned", "VARIANTS"]


def _act(act_layer: LayerType) -> nn.Module:
    # never in place: a block's shortcut reads the same (un-activated) input as its first act
    return get_act_layer(act_layer)()


class SeparableConv2d(nn.Module):
    """``conv_dw`` -> ``bn_dw`` [-> act] -> ``conv_pw`` -> ``bn_pw`` [-> act]: the acts are there only
    in blocks that do not start each conv with an activation (the exit flow's last block)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 act_layer: LayerType = None, eps: float = 1e-3) -> None:
        super().__init__()
        self.conv_dw = create_conv2d_pad(in_chs, in_chs, kernel_size, stride=stride, dilation=dilation,
                                         groups=in_chs)
        self.bn_dw = nn.BatchNorm2d(in_chs, eps=eps)
        self.act_dw = _act(act_layer) if act_layer is not None else nn.Identity()
        self.conv_pw = create_conv2d_pad(in_chs, out_chs, 1)
        self.bn_pw = nn.BatchNorm2d(out_chs, eps=eps)
        self.act_pw = _act(act_layer) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_dw(self.bn_dw(self.conv_dw(x)))
        return self.act_pw(self.bn_pw(self.conv_pw(x)))


class PreSeparableConv2d(nn.Module):
    """Pre-activation separable conv: [``norm`` + act ->] ``conv_dw`` -> ``conv_pw`` (no norm after)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 act_layer: LayerType = nn.ReLU, first_in_block: bool = False, eps: float = 1e-3) -> None:
        super().__init__()
        self.norm = nn.Identity() if first_in_block else BatchNormAct2d(in_chs, eps=eps, act_layer=act_layer)
        self.conv_dw = create_conv2d_pad(in_chs, in_chs, kernel_size, stride=stride, dilation=dilation,
                                         groups=in_chs)
        self.conv_pw = create_conv2d_pad(in_chs, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(self.norm(x)))


class XceptionModule(nn.Module):
    """Three separable convs (stride on the last) plus a 1x1 projection / identity / no shortcut.

    ``feature_inner`` names the ``stack`` child whose output is this block's feature level (the
    map just before the strided conv), or is ``''`` when the level is the block's output.
    """

    def __init__(self, in_chs: int, out_chs: Union[int, Sequence[int]], stride: int = 1, dilation: int = 1,
                 start_with_relu: bool = True, no_skip: bool = False, act_layer: LayerType = nn.ReLU,
                 eps: float = 1e-3) -> None:
        super().__init__()
        out_chs = tuple(out_chs) if isinstance(out_chs, (tuple, list)) else (out_chs,) * 3
        self.out_channels = out_chs[-1]
        self.feature_inner = ""
        self.no_skip = no_skip
        self.shortcut: Optional[nn.Module] = None
        if not no_skip and (self.out_channels != in_chs or stride != 1):
            self.shortcut = ConvNormAct(in_chs, self.out_channels, 1, stride=stride, apply_act=False,
                                        norm_kwargs=dict(eps=eps))
        stack: OrderedDict[str, nn.Module] = OrderedDict()
        chs = in_chs
        for i, out in enumerate(out_chs):
            if start_with_relu:
                stack[f"act{i + 1}"] = _act(act_layer)
            stack[f"conv{i + 1}"] = SeparableConv2d(chs, out, 3, stride=stride if i == 2 else 1, dilation=dilation,
                                                    act_layer=None if start_with_relu else act_layer, eps=eps)
            chs = out
        self.stack = nn.Sequential(stack)

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stack input, shortcut input): both the raw input here; pre-activation blocks differ."""
        return x, x

    def _add_shortcut(self, x: torch.Tensor, shortcut_in: torch.Tensor) -> torch.Tensor:
        if self.no_skip:
            return x
        if self.shortcut is not None:
            return x + self.shortcut(shortcut_in)
        return x + shortcut_in

    def forward_with_feature(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(block output, map at ``feature_inner``): one pass, the stack run child by child."""
        x, short_in = self._inputs(x)
        feat = x
        for name, m in self.stack.named_children():
            x = m(x)
            if name == self.feature_inner:
                feat = x
        x = self._add_shortcut(x, short_in)
        return x, (feat if self.feature_inner else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, short_in = self._inputs(x)
        return self._add_shortcut(self.stack(x), short_in)


class PreXceptionModule(XceptionModule):
    """Pre-activation block: ``norm`` (+ act) once on the input, which feeds the stack and a
    projection shortcut; an identity shortcut adds the raw input."""

    def __init__(self, in_chs: int, out_chs: Union[int, Sequence[int]], stride: int = 1, dilation: int = 1,
                 no_skip: bool = False, act_layer: LayerType = nn.ReLU, eps: float = 1e-3, **_: Any) -> None:
        nn.Module.__init__(self)
        out_chs = tuple(out_chs) if isinstance(out_chs, (tuple, list)) else (out_chs,) * 3
        self.out_channels = out_chs[-1]
        self.feature_inner = ""
        self.no_skip = no_skip
        self.shortcut = None
        if not no_skip and (self.out_channels != in_chs or stride != 1):
            self.shortcut = create_conv2d_pad(in_chs, self.out_channels, 1, stride=stride)
        self.norm = BatchNormAct2d(in_chs, eps=eps, act_layer=act_layer)
        stack: OrderedDict[str, nn.Module] = OrderedDict()
        chs = in_chs
        for i, out in enumerate(out_chs):
            stack[f"conv{i + 1}"] = PreSeparableConv2d(chs, out, 3, stride=stride if i == 2 else 1, dilation=dilation,
                                                       act_layer=act_layer, first_in_block=i == 0, eps=eps)
            chs = out
        self.stack = nn.Sequential(stack)

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = self.norm(x)
        return pre, pre


class XceptionAligned(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """Aligned Xception: a two-conv stem, ``blocks`` (entry / middle / exit flows), pooled ``head``."""

    feature_cfg = {"feature_cls": "hook", "flatten_sequential": True}
    _stem_level = False
    _final_after_stop_early = True

    def __init__(self, *, block_cfg: Sequence[dict[str, Any]], preact: bool = False, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0, output_stride: int = 32,
                 act_layer: LayerType = nn.ReLU, bn_eps: float = 1e-3) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.preact = preact
        nkw = dict(eps=bn_eps)  # TF-trained weights: 1e-3; xception41p was trained with PyTorch's 1e-5
        stem2 = create_conv2d_pad(32, 64, 3) if preact else ConvNormAct(32, 64, 3, act_layer=act_layer, norm_kwargs=nkw)
        self.stem = nn.Sequential(ConvNormAct(in_chans, 32, 3, stride=2, act_layer=act_layer, norm_kwargs=nkw), stem2)
        block_cls = PreXceptionModule if preact else XceptionModule
        reduction, dilation, chs = 2, 1, 64
        blocks, self.feature_info = [], []
        for i, cfg in enumerate(block_cfg):
            cfg = dict(cfg)
            stride = cfg.pop("stride", 1)
            next_reduction = reduction * stride
            if stride > 1 and next_reduction > output_stride:  # atrous from here on
                dilation *= stride
                stride = 1
                next_reduction = reduction
            block = block_cls(chs, stride=stride, dilation=dilation, act_layer=act_layer, eps=nkw["eps"], **cfg)
            if stride > 1:  # the level is the map just before this block's strided conv
                block.feature_inner = "conv2" if preact else "act3"
                self.feature_info.append(dict(num_chs=block.stack.conv2.conv_pw.out_channels, reduction=reduction,
                                              module=f"blocks.{i}.stack.{block.feature_inner}"))
            blocks.append(block)
            chs, reduction = block.out_channels, next_reduction
        self.blocks = nn.Sequential(*blocks)
        self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"blocks.{len(blocks) - 1}"))
        self.act = _act(act_layer) if preact else nn.Identity()
        self.num_features = self.head_hidden_size = chs
        self.head = ClassifierHead(chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.act(x)

    # --- FeatureMixin hooks: the trunk state is (block output, the block's feature map) ------
    def _forward_stem(self, x: torch.Tensor) -> tuple[Any, Optional[torch.Tensor]]:
        x = self.stem(x)
        return (x, x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _level_positions(self) -> list[int]:
        kept = len(self.blocks)
        out = []
        for info in self.feature_info:
            p = int(info["module"].split(".")[1])
            if p >= kept:
                break
            out.append(p)
        return out

    def _run_stage(self, index: int, stage: nn.Module, x: Any) -> Any:
        # a block without an inner level runs through __call__, so hooks on the block itself fire
        fn = stage.forward_with_feature if stage.feature_inner else stage
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            out = checkpoint_module(fn, x[0])
        else:
            out = fn(x[0])
        return out if stage.feature_inner else (out, out)

    def _level_output(self, x: Any, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        return x[1]

    def _final(self, x: Any) -> torch.Tensor:
        return self.act(x[0])

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]


def _flow(entry: Sequence[tuple[int, int]], middle: int) -> list[dict[str, Any]]:
    """Block configs: entry-flow (out, stride) pairs, ``middle`` 728-wide units, the two exit blocks."""
    cfg = [dict(out_chs=c, stride=s) for c, s in entry]
    cfg += [dict(out_chs=728, stride=1) for _ in range(middle)]
    cfg += [dict(out_chs=(728, 1024, 1024), stride=2),
            dict(out_chs=(1536, 1536, 2048), stride=1, no_skip=True, start_with_relu=False)]
    return cfg


_ENTRY = ((128, 2), (256, 2), (728, 2))
_ENTRY71 = ((128, 2), (256, 1), (256, 2), (728, 1), (728, 2))
VARIANTS: dict[str, Variant] = {
    "xception41": Variant(XceptionAligned, block_cfg=_flow(_ENTRY, 8)),
    "xception41p": Variant(XceptionAligned, block_cfg=_flow(_ENTRY, 8), preact=True, bn_eps=1e-5),
    "xception65": Variant(XceptionAligned, block_cfg=_flow(_ENTRY, 16)),
    "xception65p": Variant(XceptionAligned, block_cfg=_flow(_ENTRY, 16), preact=True),
    "xception71": Variant(XceptionAligned, block_cfg=_flow(_ENTRY71, 16)),
}

register_family("xception_aligned", VARIANTS)
