"""CPUBone ("CPUBone: Efficient Vision Backbone Design for Devices with Low Parallelization
Capabilities", Nottebaum, Dunnhofer & Micheloni, CVPR Findings 2026, arXiv:2603.26425).

A LowFormer-style conv/attention hybrid tuned for CPUs, where latency ~ MACs / MACs-per-second:
depthwise convs have few MACs but run badly, dense convs run well but cost many MACs. CPUBone
takes the middle: **grouped** expansion convs (``groups=2``) and **2x2 kernels** in the deeper
stages (a ``ZeroPad2d((1, 0, 1, 0))`` in front keeps the map size). Fused MBConvs (grouped
``k x k`` expansion, 1x1 projection) below 256 channels, unfused grouped MBConvs (grouped 1x1,
2x2 depthwise, 1x1) from 256 on.

The last two stages stack CPUBone blocks: a residual GroupNorm + "Lowtention" (depthwise 2x2
conv-BN, stride 2 in stage 3, then one 1x1 conv to q/k/v of half the width, softmax attention,
1x1 conv back to full width and nearest upsampling to the input grid), a residual GroupNorm MLP
(x4, GELU) and a residual local (fused) MBConv. The head is EfficientViT's: 1x1 conv-BN-hswish,
global pool, linear + LayerNorm + hswish, classifier.

Variants: ``bfrobust`` unfused MBConvs normalise both the expansion and the depthwise conv,
``dwnorm`` only the depthwise conv, plain ones neither (biases instead).
:meth:`CPUBone.reparameterize` folds each GroupNorm's affine into the conv after it, where that is
exact; ``visionzoo.optimize`` calls it and then folds the BatchNorms into their convs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.drop import drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .efficientvit_mit import ResidualBlock

__all__ = ["CPUBone", "ConvAttention", "CPUBoneBlock"]


class ConvLayer(nn.Module):
    """Conv -> optional BN -> optional act. A 2x2 stride-1 kernel is padded on the top/left only
    (``conv`` is then ``Sequential(ZeroPad2d, Conv2d)``), so the map keeps its size."""

    def __init__(self, in_chs: int, out_chs: int, k: int = 1, stride: int = 1, groups: int = 1, bias: bool = False,
                 norm: bool = True, act_layer: Optional[type] = None) -> None:
        super().__init__()
        if k == 2 and stride == 1:
            self.conv: nn.Module = nn.Sequential(
                nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(in_chs, out_chs, 2, 1, 0, groups=groups, bias=bias))
        else:
            self.conv = nn.Conv2d(in_chs, out_chs, k, stride, 0 if k == 2 else k // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class FusedMBConv(nn.Module):
    """Grouped ``k x k`` expansion (``spatial_conv``: BN, act) -> 1x1 projection (``point_conv``: BN)."""

    def __init__(self, in_chs: int, out_chs: int, k: int, stride: int, expand: float, groups: int,
                 act_layer: type, bias: bool = False) -> None:
        super().__init__()
        mid = round(in_chs * expand)
        self.spatial_conv = ConvLayer(in_chs, mid, k, stride, groups, bias=bias, act_layer=act_layer)
        self.point_conv = ConvLayer(mid, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class MBConv(nn.Module):
    """Grouped 1x1 expansion -> ``k x k`` depthwise -> 1x1 projection (BN). ``norms`` says which of
    the first two convs have a BN; those without one have a bias."""

    def __init__(self, dim: int, k: int, expand: float, groups: int, act_layer: type,
                 norms: tuple[bool, bool] = (False, False)) -> None:
        super().__init__()
        mid = round(dim * expand)
        self.inverted_conv = ConvLayer(dim, mid, 1, groups=groups, bias=not norms[0], norm=norms[0],
                                       act_layer=act_layer)
        self.depth_conv = ConvLayer(mid, mid, k, groups=mid, bias=not norms[1], norm=norms[1], act_layer=act_layer)
        self.point_conv = ConvLayer(mid, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class ConvAttention(nn.Module):
    """Lowtention: multi-head softmax attention on a (for ``stride`` 2) half-resolution map.

    ``conv_proj`` (2x2 depthwise, BN) -> ``pwise`` (1x1, per head ``[q, k, v]`` of ``head_dim``)
    -> attention -> ``upsampling`` (1x1 conv to ``dim``, nearest x``stride``), cropped to the
    input grid.
    """

    def __init__(self, dim: int, stride: int = 2, head_dim_ratio: float = 0.5) -> None:
        super().__init__()
        self.num_heads = max(1, int(dim * head_dim_ratio) // 30)
        self.head_dim = int(dim // self.num_heads * head_dim_ratio)
        inner = self.num_heads * self.head_dim
        self.fused_attn = False
        self.conv_proj = ConvLayer(dim, dim, 2, stride, groups=dim)
        self.pwise = nn.Conv2d(dim, 3 * inner, 1, bias=False)
        self.upsampling = nn.Sequential(
            nn.Conv2d(inner, dim, 1), nn.Upsample(scale_factor=stride, mode="nearest") if stride > 1 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        qkv = self.pwise(self.conv_proj(x))
        B, _, h, w = qkv.shape
        qkv = qkv.reshape(B, self.num_heads, 3 * self.head_dim, h * w).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)
        if self.fused_attn:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            o = attn.softmax(dim=-1) @ v
        o = o.transpose(-1, -2).reshape(B, self.num_heads * self.head_dim, h, w)
        return self.upsampling(o)[:, :, :H, :W]


class CPUBoneBlock(nn.Module):
    """``total``: (GroupNorm + attention, GroupNorm + MLP) context pair, then a local MBConv; each
    residual. The local conv is fused below 256 channels, unfused (grouped 1x1, 2x2 dw) above."""

    def __init__(self, dim: int, att_stride: int, expand: float, mlp_ratio: float, groups: int, act_layer: type,
                 mb_norms: tuple[bool, bool], drop_path: float = 0.0) -> None:
        super().__init__()
        attn = ResidualBlock(nn.Sequential(nn.GroupNorm(1, dim), ConvAttention(dim, att_stride)), drop_path=drop_path)
        hidden = int(dim * mlp_ratio)
        mlp = ResidualBlock(nn.Sequential(nn.GroupNorm(1, dim), nn.Conv2d(dim, hidden, 1), nn.GELU(),
                                          nn.Conv2d(hidden, dim, 1), nn.Dropout(0.0)), drop_path=drop_path)
        if dim < 256:
            local: nn.Module = FusedMBConv(dim, dim, 2, 1, expand, groups, act_layer, bias=True)
        else:
            local = MBConv(dim, 2, expand, groups, act_layer, mb_norms)
        self.total = nn.Sequential(nn.Sequential(attn, mlp), ResidualBlock(local, drop_path=drop_path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.total(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the GroupNorm affines into the next conv: the MLP's 1x1 (always exact) and the
        attention's depthwise ``conv_proj`` when it has no zero padding (stride 2)."""
        attn_seq, mlp_seq = self.total[0][0].main, self.total[0][1].main
        _fold_norm_affine(mlp_seq, mlp_seq[1])
        proj = attn_seq[1].conv_proj.conv
        if isinstance(proj, nn.Conv2d):
            _fold_norm_affine(attn_seq, proj)


def _fold_norm_affine(seq: nn.Sequential, conv: nn.Conv2d) -> None:
    """``conv(gn(x) * g + b)`` -> ``conv'(gn(x))`` for an unpadded ``conv`` after ``seq[0]``."""
    norm = seq[0]
    if not isinstance(norm, nn.GroupNorm) or not norm.affine:
        return
    g, b = norm.weight, norm.bias
    w = conv.weight  # (out, in / groups, kh, kw)
    groups = conv.groups
    out_per_group = w.shape[0] // groups
    gi = g.reshape(groups, 1, -1, 1, 1)  # in-channels of each group
    wg = w.reshape(groups, out_per_group, -1, *w.shape[2:])
    shift = (wg * b.reshape(groups, 1, -1, 1, 1)).sum(dim=(2, 3, 4)).reshape(-1)
    new_w = (wg * gi).reshape_as(w)
    bias = shift if conv.bias is None else conv.bias + shift
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=groups, bias=True).to(w.device, w.dtype)
    fused.weight.copy_(new_w)
    fused.bias.copy_(bias)
    plain = nn.GroupNorm(norm.num_groups, norm.num_channels, norm.eps, affine=False)
    seq[0] = plain
    for parent in seq.modules():  # replace the conv wherever it sits inside ``seq``
        for name, child in parent.named_children():
            if child is conv:
                setattr(parent, name, fused)


class ClassifierHead(nn.Module):
    """``in_conv`` (1x1, BN, act) -> pool -> ``pre_classifier`` (linear, LayerNorm, act) -> dropout ->
    ``classifier``. An empty pool returns the ``in_conv`` map."""

    def __init__(self, in_chs: int, widths: Sequence[int], num_classes: int, act_layer: type,
                 pool_type: str = "avg", drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_conv = ConvLayer(in_chs, widths[0], 1, act_layer=act_layer)
        self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        self.pre_classifier = _LinearNormAct(widths[0], widths[1], act_layer)
        self.drop = nn.Dropout(drop_rate)
        self.classifier = _LinearNormAct(widths[1], num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        width = self.pre_classifier.linear.out_features
        self.classifier = _LinearNormAct(width, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.in_conv(x)
        if self.global_pool.is_identity():
            return x
        x = self.pre_classifier(self.global_pool(x))
        return x if pre_logits else self.classifier(self.drop(x))


class _LinearNormAct(nn.Module):
    """``linear`` (biased only without a norm) -> ``norm`` (LayerNorm) -> act, or a plain biased ``linear``."""

    def __init__(self, in_features: int, out_features: int, act_layer: Optional[type] = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=act_layer is None)
        if act_layer is not None:
            self.norm = nn.LayerNorm(out_features)
            self.act = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        if hasattr(self, "norm"):
            x = self.act(self.norm(x))
        return x


class CPUBone(FeatureMixin, ModelForwardMixin, nn.Module):
    """Stem (3x3 stride 2, optional fused blocks) and four stages (strides 4..32): a stride-2 fused
    MBConv each, residual fused MBConvs in the first two, CPUBone blocks in the last two."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64, 128, 256), depths: Sequence[int] = (0, 1, 1, 3, 4),
                 head_widths: Sequence[int] = (1536, 1600), groups: int = 2, down_expand: float = 4.0,
                 stem_expand: float = 4.0, expand: float = 4.0, mlp_ratio: float = 4.0,
                 mb_norms: tuple[bool, bool] = (False, False), act_layer: LayerType = "hard_swish",
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        act = get_act_layer(act_layer)
        self.stem = nn.Sequential(ConvLayer(in_chans, widths[0], 3, 2, act_layer=act))
        for _ in range(depths[0]):
            self.stem.append(ResidualBlock(FusedMBConv(widths[0], widths[0], 3, 1, stem_expand, groups, act)))
        # depths[1:3]: conv stages count their stride-2 block, attention stages add blocks after it
        counts = [depths[1] - 1, depths[2] - 1, depths[3], depths[4]]
        dpr = drop_path_rates(drop_path_rate, counts)
        stages, self.feature_info = [], []
        for i in range(4):
            in_chs, dim = widths[i], widths[i + 1]
            blocks = [ResidualBlock(FusedMBConv(in_chs, dim, 3, 2, down_expand, groups, act), residual=False)]
            for j in range(counts[i]):
                if i < 2:
                    blocks.append(ResidualBlock(FusedMBConv(dim, dim, 3, 1, expand, groups, act), drop_path=dpr[i][j]))
                else:
                    blocks.append(CPUBoneBlock(dim, 2 if i == 2 else 1, expand, mlp_ratio, groups, act, mb_norms,
                                               dpr[i][j]))
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.head_hidden_size = head_widths[-1]
        self.head = ClassifierHead(widths[-1], head_widths, num_classes, act, global_pool, drop_rate)

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(stage, x)
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            for stage in self.stages:
                x = checkpoint_seq(stage, x)
            return x
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    @torch.no_grad()
    def reparameterize(self) -> "CPUBone":
        """Inference-only folding of every block's GroupNorm affines (see :class:`CPUBoneBlock`)."""
        for m in self.modules():
            if isinstance(m, CPUBoneBlock):
                m.reparameterize()
        return self


_b = Variant(CPUBone, widths=(16, 32, 64, 128, 256), depths=(0, 1, 1, 3, 4))
VARIANTS: dict[str, Variant] = {
    "cpubone_nano": _b.but(widths=(12, 24, 48, 96, 192), depths=(0, 1, 1, 1, 2)),
    "cpubone_t0": _b.but(widths=(12, 24, 48, 96, 192), depths=(0, 1, 1, 2, 3)),
    "cpubone_s0": _b.but(widths=(14, 28, 56, 112, 224), depths=(0, 1, 1, 2, 3)),
    "cpubone_b0_bfrobust": _b.but(mb_norms=(True, True)),
    "cpubone_b1_bfrobust": _b.but(depths=(0, 1, 1, 5, 5), down_expand=6.0, mb_norms=(True, True)),
    "cpubone_b1_dwnorm": _b.but(depths=(0, 1, 1, 5, 5), down_expand=6.0, mb_norms=(False, True)),
    "cpubone_b2_bfrobust": _b.but(widths=(20, 40, 80, 160, 320), depths=(0, 1, 1, 6, 6), down_expand=6.0,
                                  head_widths=(2304, 2560), mb_norms=(True, True)),
    "cpubone_b2pt5_dwnorm": _b.but(widths=(24, 48, 96, 192, 384), depths=(0, 1, 1, 6, 6), down_expand=6.0,
                                   head_widths=(2304, 2560), mb_norms=(False, True)),
    "cpubone_b3": _b.but(widths=(32, 64, 128, 256, 512), depths=(1, 2, 3, 6, 6), down_expand=6.0),
}
register_family("cpubone", VARIANTS)
