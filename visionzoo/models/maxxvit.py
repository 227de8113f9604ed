"""MaxViT (Tu et al., 2022, "MaxViT: Multi-Axis Vision Transformer"), CoAtNet (Dai et al., 2021,
"CoAtNet: Marrying Convolution and Attention for All Data Sizes") and their MaxxViT relatives.

Both are four-stage hierarchies after a two-conv stride-2 stem, built from the same two kinds of
unit:

* a convolution block: MBConv (pre-norm, 1x1 expand, depthwise kxk, squeeze-excite, 1x1
  project) or a ConvNeXt block (depthwise 7x7, norm, 1x1 MLP, layer scale);
* a transformer block with a relative position bias: global attention over the whole map
  (CoAtNet's later stages), or "multi-axis" attention (MaxViT) — first inside non-overlapping
  ``P x P`` windows (*block* attention: local), then over a ``G x G`` grid of tokens spaced
  ``H/G`` apart (*grid* attention: sparse, global). ``P = G = img_size / 32``.

CoAtNet stacks conv stages then transformer stages; a MaxViT block is ``conv -> block attention
-> grid attention`` in every stage. The variants differ on a handful of axes, all expressed as
two config dataclasses (:class:`ConvCfg`, :class:`TransformerCfg`) inside :class:`MaxxVitCfg`:
where the stride goes (depthwise conv, 1x1 conv or a pool), whether widths expand from the
input or the output, norms/activations/epsilons (the ``*_tf`` ports of the official TF weights
use BN eps 1e-3, "SAME" padding and biased stem convs), and how the relative position bias is
made: a learned table per offset (``bias``, ``[(2P-1)^2, heads]``), the TF port's
``[heads, 2P-1, 2P-1]`` table (``bias_tf``), or a small MLP on log-spaced offsets (``rmlp``,
Swin V2-CR style, which needs no resampling for a new size).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.config import use_fused_attn
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import to_2tuple
from ..layers.layer_scale import LayerScale, LayerScale2d
from ..layers.mlp import Mlp
from ..layers.norm import get_norm_layer
from ..layers.norm_act import BatchNormAct2d, LayerNormAct2d
from ..layers.padding import create_conv2d_pad
from ..layers.pool import ClassifierHead, NormMlpClassifierHead
from ..layers.rel_pos_bias import RelPosBias, RelPosMlp
from ..layers.squeeze_excite import SEModule
from ..layers.weight_init import trunc_normal_
from ..layers.window_attention import relative_position_index, resize_rel_pos_bias_table, window_partition, \
    window_reverse
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["MaxxVit", "MaxxVitCfg", "ConvCfg", "TransformerCfg", "grid_partition", "grid_reverse",
           "window_partition", "window_reverse", "VARIANTS"]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvCfg:
    """The convolution blocks (MBConv / ConvNeXt) of a network."""

    block: str = "mbconv"              # 'mbconv' | 'convnext'
    expand_ratio: float = 4.0
    expand_output: bool = True         # hidden width from the output (True) or the input width
    kernel_size: int = 3
    pre_norm_act: bool = False         # activation after the MBConv pre-norm
    output_bias: bool = True           # bias of the last 1x1 conv and the shortcut projection
    stride_mode: str = "dw"            # where a stride-2 block reduces: 'dw', '1x1' or 'pool'
    pool_type: str = "avg2"            # the pool of stride_mode='pool'
    downsample_pool_type: str = "avg2"  # the shortcut's pool
    padding: str = ""                  # '' symmetric, 'same' TF
    se_early: bool = False             # squeeze-excite before norm2 (and its act)
    se_ratio: float = 1 / 16           # SE reduction, relative to the hidden width
    se_act: LayerType = "silu"
    ls_init: float | None = 1e-6       # ConvNeXt layer scale
    act_layer: LayerType = "gelu"
    norm_eps: float = 1e-5             # BatchNorm (MBConv) / LayerNorm (ConvNeXt)


@dataclass(frozen=True)
class TransformerCfg:
    """The attention blocks of a network."""

    dim_head: int = 32
    head_first: bool = True            # qkv channels grouped per head ([heads, 3, d]) or [3, heads, d]
    expand_ratio: float = 4.0          # MLP ratio
    expand_first: bool = True          # CoAtNet: attend at the output width (True) or input width
    shortcut_bias: bool = True
    pool_type: str = "avg2"
    rel_pos: str = "bias"              # 'bias' | 'bias_tf' | 'mlp'
    rel_pos_dim: int = 512             # hidden width of the 'mlp' bias
    partition_ratio: int = 32          # window / grid size = img_size // partition_ratio
    no_block_attn: bool = False        # MaxxViT-V2: grid attention only
    init_values: float | None = None   # layer scale of the residual branches
    act_layer: LayerType = "gelu"
    norm_layer: str = "layernorm2d"    # CoAtNet blocks and the final norm (channels-first)
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class MaxxVitCfg:
    """Widths, depths, block kinds per stage and the two block configs.

    ``block_type`` per stage: ``'C'`` conv, ``'T'`` CoAtNet transformer, ``'M'`` MaxViT
    (conv + block + grid attention), ``'PM'`` parallel MaxViT (two convs, block and grid
    attention side by side); or a tuple giving each block of the stage its kind.
    """

    embed_dim: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 3, 5, 2)
    block_type: tuple = ("C", "C", "T", "T")
    stem_width: int | tuple[int, int] = 64
    stem_bias: bool = False
    conv: ConvCfg = field(default_factory=ConvCfg)
    transformer: TransformerCfg = field(default_factory=TransformerCfg)
    head_hidden_size: int | None = None  # a NormMlp head (norm inside the head, tanh hidden layer)


# --------------------------------------------------------------------------------------------
# partitions
# --------------------------------------------------------------------------------------------

def grid_partition(x: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B * (H/Gh) * (W/Gw), Gh, Gw, C]``: each group holds the ``Gh x Gw``
    tokens spaced ``(H/Gh, W/Gw)`` apart (MaxViT's dilated, global "grid" attention)."""
    b, h, w, c = x.shape
    gh, gw = grid_size
    x = x.view(b, gh, h // gh, gw, w // gw, c)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(-1, gh, gw, c)


def grid_reverse(windows: torch.Tensor, grid_size: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`grid_partition`."""
    gh, gw = grid_size
    c = windows.shape[-1]
    x = windows.view(-1, h // gh, w // gw, gh, gw, c)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(-1, h, w, c)


# --------------------------------------------------------------------------------------------
# relative position bias and attention
# --------------------------------------------------------------------------------------------

class RelPosBiasTf(nn.Module):
    """The TF MaxViT port's bias: a ``[heads, 2H-1, 2W-1]`` table (head-first, as the official
    checkpoints store it) indexed by the key-minus-query offset (the transpose of
    :class:`RelPosBias`'s query-minus-key index)."""

    def __init__(self, window_size: Sequence[int], num_heads: int) -> None:
        super().__init__()
        self.window_size = (int(window_size[0]), int(window_size[1]))
        self.num_heads = num_heads
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, 2 * wh - 1, 2 * ww - 1))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size).t(),
                             persistent=False)
        nn.init.normal_(self.relative_position_bias_table, std=0.02)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        device = self.relative_position_index.device
        if device.type != "meta":
            self.relative_position_index = relative_position_index(self.window_size, device=device).t()

    def get_bias(self) -> torch.Tensor:
        n = self.relative_position_index.shape[0]
        table = self.relative_position_bias_table.flatten(1)
        return table[:, self.relative_position_index.reshape(-1)].reshape(1, self.num_heads, n, n)


def resize_rel_pos_bias_tf(table: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """Resample a ``[heads, 2H-1, 2W-1]`` table for another window (bicubic over the offsets)."""
    size = (2 * window_size[0] - 1, 2 * window_size[1] - 1)
    if tuple(table.shape[-2:]) == size:
        return table
    out = F.interpolate(table.float().unsqueeze(0), size=size, mode="bicubic", align_corners=False)
    return out.squeeze(0).to(table.dtype)


def _rel_pos(kind: str, window_size: Sequence[int], num_heads: int, hidden: int) -> nn.Module:
    if kind == "mlp":
        return RelPosMlp(window_size, num_heads=num_heads, hidden_dim=hidden, mode="cr")
    if kind == "bias_tf":
        return RelPosBiasTf(window_size, num_heads)
    return RelPosBias(window_size, num_heads=num_heads)


class _AttnCore(nn.Module):
    """Multi-head attention with a relative position bias on ``[B, N, 3*heads*d]`` projections.

    Subclasses own ``qkv``/``proj`` (Linear on tokens, or 1x1 convs on NCHW maps); this holds the
    head split (``head_first``: ``[heads, 3, d]`` channel order, else ``[3, heads, d]``) and the
    biased softmax attention.
    """

    def _init_core(self, dim_attn: int, dim_head: int, head_first: bool, attn_drop: float) -> None:
        self.num_heads = dim_attn // dim_head
        self.dim_head = dim_head
        self.head_first = head_first
        self.scale = dim_head ** -0.5
        self.fused_attn = use_fused_attn()
        self.attn_drop = nn.Dropout(attn_drop)

    def _attend(self, qkv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``qkv [B, N, 3*heads*d]`` -> ``[B, N, heads*d]``."""
        b, n, _ = qkv.shape
        if self.head_first:
            q, k, v = qkv.view(b, n, self.num_heads, 3, self.dim_head).permute(3, 0, 2, 1, 4).unbind(0)
        else:
            q, k, v = qkv.view(b, n, 3, self.num_heads, self.dim_head).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1) + bias
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        return x.transpose(1, 2).reshape(b, n, -1)


class AttentionCl(_AttnCore):
    """Attention on channels-last windows ``[B, Wh, Ww, C]`` (MaxViT's block / grid attention)."""

    def __init__(self, dim: int, dim_out: int | None = None, *, dim_head: int = 32, head_first: bool = True,
                 rel_pos: str = "bias", window_size: Sequence[int] = (7, 7), rel_pos_dim: int = 512,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        dim_out = dim_out or dim
        self._init_core(dim, dim_head, head_first, attn_drop)
        self.qkv = nn.Linear(dim, dim * 3)
        self.rel_pos = _rel_pos(rel_pos, window_size, self.num_heads, rel_pos_dim)
        self.proj = nn.Linear(dim, dim_out)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = self._attend(self.qkv(x.reshape(shape[0], -1, shape[-1])), self.rel_pos.get_bias())
        x = self.proj_drop(self.proj(x))
        return x.reshape(shape[0], shape[1], shape[2], -1)


class Attention2d(_AttnCore):
    """Global attention over an NCHW map with 1x1-conv projections (CoAtNet's transformer stages)."""

    def __init__(self, dim: int, dim_out: int, *, dim_head: int = 32, head_first: bool = True,
                 expand_first: bool = True, rel_pos: str = "bias", window_size: Sequence[int] = (7, 7),
                 rel_pos_dim: int = 512, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        dim_attn = dim_out if expand_first else dim
        self._init_core(dim_attn, dim_head, head_first, attn_drop)
        self.qkv = nn.Conv2d(dim, dim_attn * 3, 1)
        self.rel_pos = _rel_pos(rel_pos, window_size, self.num_heads, rel_pos_dim)
        self.proj = nn.Conv2d(dim_attn, dim_out, 1)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        qkv = self.qkv(x).flatten(2).transpose(1, 2)
        x = self._attend(qkv, self.rel_pos.get_bias())
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        return self.proj_drop(self.proj(x))


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------

def _pool(pool_type: str) -> nn.Module:
    """A stride-2 pool: ``avg2``/``max2`` (2x2) or ``avg``/``max`` (3x3, padded)."""
    if pool_type == "avg2":
        return nn.AvgPool2d(2, 2)
    if pool_type == "max2":
        return nn.MaxPool2d(2, 2)
    if pool_type == "avg":
        return nn.AvgPool2d(3, 2, 1, count_include_pad=False)
    if pool_type == "max":
        return nn.MaxPool2d(3, 2, 1)
    raise ValueError(f"unknown pool type {pool_type!r}")


class Downsample2d(nn.Module):
    """Shortcut of a block that changes size/width: ``pool`` (stride 2) then 1x1 ``expand``."""

    def __init__(self, dim: int, dim_out: int, stride: int = 1, pool_type: str = "avg2", bias: bool = True) -> None:
        super().__init__()
        self.pool = _pool(pool_type) if stride > 1 else nn.Identity()
        self.expand = nn.Conv2d(dim, dim_out, 1, bias=bias) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


class MbConvBlock(nn.Module):
    """Pre-norm MBConv: ``norm -> 1x1 expand -> norm/act -> depthwise kxk -> norm/act -> SE ->
    1x1 project``, plus the (pooled, projected) shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, cfg: ConvCfg = ConvCfg(),
                 drop_path: float = 0.0) -> None:
        super().__init__()
        bn_act = partial(BatchNormAct2d, eps=cfg.norm_eps, act_layer=get_act_layer(cfg.act_layer))
        mid = int((out_chs if cfg.expand_output else in_chs) * cfg.expand_ratio)
        stride_1x1, stride_dw = (stride, 1) if cfg.stride_mode == "1x1" else (1, stride) \
            if cfg.stride_mode == "dw" else (1, 1)
        self.shortcut = Downsample2d(in_chs, out_chs, stride, cfg.downsample_pool_type, cfg.output_bias)
        self.pre_norm = bn_act(in_chs, apply_act=cfg.pre_norm_act)
        self.down = _pool(cfg.pool_type) if stride > 1 and cfg.stride_mode == "pool" else nn.Identity()
        self.conv1_1x1 = create_conv2d_pad(in_chs, mid, 1, stride=stride_1x1)
        self.norm1 = bn_act(mid)
        self.conv2_kxk = create_conv2d_pad(mid, mid, cfg.kernel_size, stride=stride_dw, groups=mid,
                                           padding=cfg.padding)
        se = partial(SEModule, mid, rd_channels=int(mid * cfg.se_ratio), act_layer=get_act_layer(cfg.se_act))
        self.se_early = se() if cfg.se_early else None
        self.norm2 = bn_act(mid)
        self.se = None if cfg.se_early else se()
        self.conv3_1x1 = nn.Conv2d(mid, out_chs, 1, bias=cfg.output_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.norm1(self.conv1_1x1(self.down(self.pre_norm(x))))
        x = self.conv2_kxk(x)
        if self.se_early is not None:
            x = self.se_early(x)
        x = self.norm2(x)
        if self.se is not None:
            x = self.se(x)
        return self.drop_path(self.conv3_1x1(x)) + shortcut


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block used as the conv unit of CoAtNeXt / MaxxViT: depthwise 7x7 (widening on a
    stage's first block) -> LayerNorm -> 1x1 MLP -> layer scale, plus the shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, cfg: ConvCfg = ConvCfg(),
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.shortcut = Downsample2d(in_chs, out_chs, stride, cfg.downsample_pool_type, cfg.output_bias)
        self.down = _pool(cfg.pool_type) if stride > 1 and cfg.stride_mode == "pool" else nn.Identity()
        dw_stride = stride if cfg.stride_mode == "dw" else 1
        self.conv_dw = create_conv2d_pad(in_chs, out_chs, cfg.kernel_size, stride=dw_stride, groups=in_chs,
                                         padding=cfg.padding, bias=True)
        self.norm = get_norm_layer("layernorm2d", eps=cfg.norm_eps)(out_chs)
        self.mlp = Mlp(out_chs, int(out_chs * cfg.expand_ratio), act_layer=get_act_layer(cfg.act_layer),
                       use_conv=True)
        self.ls = LayerScale2d(out_chs, cfg.ls_init) if cfg.ls_init is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.mlp(self.norm(self.conv_dw(self.down(x))))
        return self.drop_path(self.ls(x)) + shortcut


def _conv_block(in_chs: int, out_chs: int, stride: int, cfg: ConvCfg, drop_path: float) -> nn.Module:
    cls = ConvNeXtBlock if cfg.block == "convnext" else MbConvBlock
    return cls(in_chs, out_chs, stride, cfg, drop_path)


def _ls(dim: int, init_values: float | None, nchw: bool = False) -> nn.Module:
    if init_values is None:
        return nn.Identity()
    return LayerScale2d(dim, init_values) if nchw else LayerScale(dim, init_values)


def _dp(rate: float) -> nn.Module:
    return DropPath(rate) if rate > 0.0 else nn.Identity()


class TransformerBlock2d(nn.Module):
    """CoAtNet transformer block on NCHW maps: global relative attention over the whole map and a
    1x1-conv MLP. A stride-2 block pools after the first norm and on the shortcut."""

    def __init__(self, dim: int, dim_out: int, stride: int, feat_size: tuple[int, int], cfg: TransformerCfg,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        norm = get_norm_layer(cfg.norm_layer, eps=cfg.norm_eps)
        if stride > 1:
            self.shortcut = Downsample2d(dim, dim_out, stride, cfg.pool_type, cfg.shortcut_bias)
            self.norm1 = nn.Sequential(OrderedDict(norm=norm(dim), down=_pool(cfg.pool_type)))
        else:
            self.shortcut = Downsample2d(dim, dim_out, 1, cfg.pool_type, cfg.shortcut_bias)
            self.norm1 = norm(dim)
        self.attn = Attention2d(dim, dim_out, dim_head=cfg.dim_head, head_first=cfg.head_first,
                                expand_first=cfg.expand_first, rel_pos=cfg.rel_pos, window_size=feat_size,
                                rel_pos_dim=cfg.rel_pos_dim)
        self.ls1 = _ls(dim_out, cfg.init_values, nchw=True)
        self.drop_path1 = _dp(drop_path)
        self.norm2 = norm(dim_out)
        self.mlp = Mlp(dim_out, int(dim_out * cfg.expand_ratio), act_layer=get_act_layer(cfg.act_layer),
                       use_conv=True)
        self.ls2 = _ls(dim_out, cfg.init_values, nchw=True)
        self.drop_path2 = _dp(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shortcut(x) + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def _attention_cl(dim: int, dim_out: int, partition_size: tuple[int, int], cfg: TransformerCfg) -> AttentionCl:
    return AttentionCl(dim, dim_out, dim_head=cfg.dim_head, head_first=cfg.head_first, rel_pos=cfg.rel_pos,
                       window_size=partition_size, rel_pos_dim=cfg.rel_pos_dim)


def _cl_norm(cfg: TransformerCfg) -> Callable[..., nn.Module]:
    """The channels-last counterpart of the config's (channels-first) norm."""
    name = cfg.norm_layer[:-2] if cfg.norm_layer.endswith("2d") else cfg.norm_layer
    return get_norm_layer(name, eps=cfg.norm_eps)


class PartitionAttention(nn.Module):
    """Pre-norm transformer block on channels-last maps whose attention runs inside windows
    (``partition='block'``) or grid groups (``'grid'``) of ``partition_size`` tokens a side."""

    def __init__(self, dim: int, partition: str, partition_size: tuple[int, int], cfg: TransformerCfg,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        norm = _cl_norm(cfg)
        self.partition_block = partition == "block"
        self.partition_size = partition_size
        self.norm1 = norm(dim)
        self._add_attention(dim, partition_size, cfg)
        self.ls1 = _ls(dim, cfg.init_values)
        self.drop_path1 = _dp(drop_path)
        self.norm2 = norm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.expand_ratio), act_layer=get_act_layer(cfg.act_layer))
        self.ls2 = _ls(dim, cfg.init_values)
        self.drop_path2 = _dp(drop_path)

    def _add_attention(self, dim: int, partition_size: tuple[int, int], cfg: TransformerCfg) -> None:
        self.attn = _attention_cl(dim, dim, partition_size, cfg)

    def _partition_attn(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        if self.partition_block:
            return window_reverse(self.attn(window_partition(x, self.partition_size)), self.partition_size, h, w)
        return grid_reverse(self.attn(grid_partition(x, self.partition_size)), self.partition_size, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self._partition_attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ParallelPartitionAttention(PartitionAttention):
    """Block and grid attention side by side on the same normed input, each projecting to half the
    width, concatenated (``maxvit_tiny_pm``)."""

    def __init__(self, dim: int, partition_size: tuple[int, int], cfg: TransformerCfg,
                 drop_path: float = 0.0) -> None:
        super().__init__(dim, "parallel", partition_size, cfg, drop_path)

    def _add_attention(self, dim: int, partition_size: tuple[int, int], cfg: TransformerCfg) -> None:
        self.attn_block = _attention_cl(dim, dim // 2, partition_size, cfg)
        self.attn_grid = _attention_cl(dim, dim // 2, partition_size, cfg)

    def _partition_attn(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1], x.shape[2]
        p = self.partition_size
        xb = window_reverse(self.attn_block(window_partition(x, p)), p, h, w)
        xg = grid_reverse(self.attn_grid(grid_partition(x, p)), p, h, w)
        return torch.cat([xb, xg], dim=-1)


class MaxxVitBlock(nn.Module):
    """MaxViT block: conv block (NCHW) -> block attention -> grid attention (channels-last)."""

    def __init__(self, dim: int, dim_out: int, stride: int, partition_size: tuple[int, int], cfg: MaxxVitCfg,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        t = cfg.transformer
        self.conv = _conv_block(dim, dim_out, stride, cfg.conv, drop_path)
        self.attn_block = None if t.no_block_attn else PartitionAttention(dim_out, "block", partition_size, t,
                                                                          drop_path)
        self.attn_grid = PartitionAttention(dim_out, "grid", partition_size, t, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        if self.attn_block is not None:
            x = self.attn_block(x)
        return self.attn_grid(x).permute(0, 3, 1, 2)


class ParallelMaxxVitBlock(nn.Module):
    """Two conv blocks then parallel block/grid attention (``maxvit_tiny_pm``)."""

    def __init__(self, dim: int, dim_out: int, stride: int, partition_size: tuple[int, int], cfg: MaxxVitCfg,
                 drop_path: float = 0.0, num_conv: int = 2) -> None:
        super().__init__()
        convs = [_conv_block(dim, dim_out, stride, cfg.conv, drop_path)]
        convs += [_conv_block(dim_out, dim_out, 1, cfg.conv, drop_path) for _ in range(num_conv - 1)]
        self.conv = nn.Sequential(*convs)
        self.attn = ParallelPartitionAttention(dim_out, partition_size, cfg.transformer, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        return self.attn(x).permute(0, 3, 1, 2)


class MaxxVitStage(nn.Module):
    """A stage: its first block reduces (stride 2) and widens; ``blocks`` runs in order."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, block_types: Sequence[str], feat_size: tuple[int, int],
                 partition_size: tuple[int, int], cfg: MaxxVitCfg, drop_path: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        blocks = []
        for i in range(depth):
            stride, dim = (2, in_chs) if i == 0 else (1, out_chs)
            kind = block_types[i]
            if kind == "C":
                blocks.append(_conv_block(dim, out_chs, stride, cfg.conv, drop_path[i]))
            elif kind == "T":
                blocks.append(TransformerBlock2d(dim, out_chs, stride, feat_size, cfg.transformer, drop_path[i]))
            elif kind == "M":
                blocks.append(MaxxVitBlock(dim, out_chs, stride, partition_size, cfg, drop_path[i]))
            elif kind == "PM":
                blocks.append(ParallelMaxxVitBlock(dim, out_chs, stride, partition_size, cfg, drop_path[i]))
            else:
                raise ValueError(f"unknown block type {kind!r}")
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Stem(nn.Module):
    """``conv1`` 3x3/2 -> norm+act -> ``conv2`` 3x3 (the first block pre-norms its input); the norm is
    the conv blocks' kind (BatchNorm for MBConv, LayerNorm for ConvNeXt nets)."""

    def __init__(self, in_chs: int, widths: tuple[int, int], bias: bool, cfg: ConvCfg) -> None:
        super().__init__()
        self.conv1 = create_conv2d_pad(in_chs, widths[0], 3, stride=2, padding=cfg.padding, bias=bias)
        norm_act = LayerNormAct2d if cfg.block == "convnext" else BatchNormAct2d
        self.norm1 = norm_act(widths[0], eps=cfg.norm_eps, act_layer=get_act_layer(cfg.act_layer))
        self.conv2 = create_conv2d_pad(widths[0], widths[1], 3, stride=1, padding=cfg.padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------

class MaxxVit(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """CoAtNet / MaxViT / MaxxViT: a two-conv stem and four stages of conv, CoAtNet-transformer
    or MaxViT blocks (:class:`MaxxVitCfg`), then a norm and a classifier.

    ``img_size`` fixes the attention geometry: the window/grid size of MaxViT blocks
    (``img_size // partition_ratio``) and the map size of CoAtNet's global attention.
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(self, *, cfg: MaxxVitCfg, img_size: int | Sequence[int] = 224, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes, self.grad_checkpointing = num_classes, False
        img_size = to_2tuple(img_size)
        self.img_size = (int(img_size[0]), int(img_size[1]))
        t = cfg.transformer
        partition = (self.img_size[0] // t.partition_ratio, self.img_size[1] // t.partition_ratio)
        stem_w = to_2tuple(cfg.stem_width)
        self.stem = Stem(in_chans, stem_w, cfg.stem_bias, cfg.conv)
        self.feature_info = [dict(num_chs=stem_w[1], reduction=2, module="stem")]
        dpr = drop_path_rates(drop_path_rate, list(cfg.depths))
        stages, in_chs, stride = [], stem_w[1], 2
        for i, (depth, dim) in enumerate(zip(cfg.depths, cfg.embed_dim)):
            stride *= 2
            feat = (-(-self.img_size[0] // stride), -(-self.img_size[1] // stride))
            kinds = cfg.block_type[i]
            kinds = [kinds] * depth if isinstance(kinds, str) else [kinds[0]] + [kinds[1]] * (depth - 1)
            stages.append(MaxxVitStage(in_chs, dim, depth, kinds, feat, partition, cfg, dpr[i]))
            in_chs = dim
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_chs
        if cfg.head_hidden_size:
            self.norm = nn.Identity()
            self.head_hidden_size = cfg.head_hidden_size
            self.head = NormMlpClassifierHead(in_chs, num_classes, hidden_size=cfg.head_hidden_size,
                                              pool_type=global_pool, drop_rate=drop_rate,
                                              norm_layer=get_norm_layer(t.norm_layer, eps=t.norm_eps))
        else:
            self.norm = get_norm_layer(t.norm_layer, eps=t.norm_eps)(in_chs)
            self.head_hidden_size = in_chs
            self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.norm(x)

    # FeatureMixin hooks: level 0 is the stem map, then each stage's output (the final norm is
    # part of the features, not of the last level)
    _stem_level = True

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return x, x

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample relative position bias tables trained for another window / map size."""
        own = model.state_dict()
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k.endswith("relative_position_index"):
                continue
            if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
                window = model.get_submodule(k.rsplit(".", 1)[0]).window_size
                v = resize_rel_pos_bias_tf(v, window) if v.ndim == 3 else resize_rel_pos_bias_table(v, window)
            out[k] = v
        return out


# --------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------

def _maxxvit(cfg: MaxxVitCfg, **kw: Any) -> Variant:
    return Variant(MaxxVit, cfg=cfg, **kw)


# ``*_rw``: timm-trained; SiLU convs, widths expand from the block input
_RW_CONV = ConvCfg(expand_output=False, output_bias=False, act_layer="silu")
_RW_T = TransformerCfg()
# CoAtNet rw: stride by pooling before the MBConv, SE at 1/4 of the hidden width, attention at the
# input width
_COAT_CONV = replace(_RW_CONV, stride_mode="pool", se_ratio=0.25)
_COAT_T = replace(_RW_T, expand_first=False, shortcut_bias=False)
_COAT_EARLY = replace(_COAT_CONV, se_early=True, pre_norm_act=True, se_act="relu")
_COAT_DW = replace(_COAT_CONV, stride_mode="dw", output_bias=True)
_COAT_PNA = replace(_COAT_CONV, stride_mode="dw", pre_norm_act=True)   # activated pre-norm
_COAT_PNA_RELU = replace(_COAT_PNA, se_act="relu")
_COAT_EARLY_DW = replace(_COAT_EARLY, stride_mode="dw")
# ports of the official TF MaxViT weights: TF "SAME" padding, BN eps 1e-3, tanh-approximated GELU,
# LayerNorm eps 1e-5, qkv channels grouped [3, heads, d]
_TF_CONV = ConvCfg(padding="same", norm_eps=1e-3, act_layer="gelu_tanh")
_TF_T = TransformerCfg(rel_pos="bias_tf", head_first=False, act_layer="gelu_tanh", norm_eps=1e-5)
# CoAtNet with the paper's layout: widths expand from the output, attention at the output width
_PAPER_CONV = ConvCfg()
_PAPER_T = TransformerCfg()
_CONVNEXT = replace(_RW_CONV, block="convnext", kernel_size=7, output_bias=True, act_layer="gelu", norm_eps=1e-6)

_D_NANO, _D_PICO = (64, 128, 256, 512), (32, 64, 128, 256)
_D_0, _D_2, _D_3 = (96, 192, 384, 768), (128, 256, 512, 1024), (192, 384, 768, 1536)
_CCTT, _M, _D_14 = ("C", "C", "T", "T"), ("M",) * 4, (2, 6, 14, 2)


def _coat(dims, depths, stem, conv=_COAT_CONV, t=_COAT_T, **kw: Any) -> MaxxVitCfg:
    return MaxxVitCfg(embed_dim=dims, depths=depths, block_type=kw.pop("block_type", _CCTT), stem_width=stem,
                      conv=conv, transformer=t, **kw)


def _maxvit(dims, depths, stem, conv=_RW_CONV, t=_RW_T, **kw: Any) -> MaxxVitCfg:
    return MaxxVitCfg(embed_dim=dims, depths=depths, block_type=kw.pop("block_type", _M), stem_width=stem,
                      conv=conv, transformer=t, **kw)


def _tf(dims, depths, stem) -> MaxxVitCfg:
    return _maxvit(dims, depths, stem, _TF_CONV, _TF_T, stem_bias=True, head_hidden_size=dims[-1])


def _paper_coat(dims, depths, stem) -> MaxxVitCfg:
    return _coat(dims, depths, stem, _PAPER_CONV, _PAPER_T, head_hidden_size=dims[-1])


_RMLP = dict(rel_pos="mlp")
_LS = dict(init_values=1e-6)

_CFGS: dict[str, tuple[MaxxVitCfg, int]] = {
    # CoAtNet, timm-trained
    "coatnet_pico_rw_224": (_coat(_D_NANO, (2, 3, 5, 2), (32, 64), _COAT_DW,
                                  replace(_COAT_T, shortcut_bias=True)), 224),
    "coatnet_nano_rw_224": (_coat(_D_NANO, (3, 4, 6, 3), (32, 64), replace(_COAT_CONV, output_bias=True),
                                  replace(_COAT_T, shortcut_bias=True)), 224),
    "coatnet_0_rw_224": (_coat(_D_0, (2, 3, 7, 2), (32, 64), _COAT_EARLY), 224),
    "coatnet_1_rw_224": (_coat(_D_0, _D_14, (32, 64), _COAT_EARLY_DW), 224),
    "coatnet_2_rw_224": (_coat(_D_2, _D_14, (64, 128), _COAT_PNA, replace(_COAT_T, shortcut_bias=True)), 224),
    "coatnet_3_rw_224": (_coat(_D_3, _D_14, (96, 192), _COAT_PNA, replace(_COAT_T, shortcut_bias=True, **_LS)), 224),
    "coatnet_bn_0_rw_224": (_coat(_D_0, (2, 3, 7, 2), (32, 64), _COAT_EARLY_DW,
                                  replace(_COAT_T, norm_layer="batchnorm2d")), 224),
    "coatnet_rmlp_nano_rw_224": (_coat(_D_NANO, (3, 4, 6, 3), (32, 64), _COAT_DW,
                                       replace(_COAT_T, shortcut_bias=True, rel_pos_dim=384, **_RMLP)), 224),
    "coatnet_rmlp_0_rw_224": (_coat(_D_0, (2, 3, 7, 2), (32, 64), _COAT_PNA_RELU,
                                    replace(_COAT_T, shortcut_bias=True, **_RMLP)), 224),
    "coatnet_rmlp_1_rw_224": (_coat(_D_0, _D_14, (32, 64), replace(_COAT_EARLY, downsample_pool_type="max"),
                                    replace(_COAT_T, rel_pos_dim=384, pool_type="max", **_RMLP)), 224),
    "coatnet_rmlp_1_rw2_224": (_coat(_D_0, _D_14, (32, 64), _COAT_PNA_RELU,
                                     replace(_COAT_T, shortcut_bias=True, **_RMLP)), 224),
    **{f"coatnet_rmlp_2_rw_{size}": (_coat(_D_2, _D_14, (64, 128), _COAT_PNA,
                                           replace(_COAT_T, shortcut_bias=True, **_RMLP, **_LS)), size)
       for size in (224, 384)},
    "coatnet_rmlp_3_rw_224": (_coat(_D_3, _D_14, (96, 192), _COAT_PNA,
                                    replace(_COAT_T, shortcut_bias=True, **_RMLP, **_LS)),
                              224),
    "coatnet_nano_cc_224": (_coat(_D_NANO, (3, 4, 6, 3), (32, 64),
                                  replace(_COAT_CONV, pre_norm_act=True, se_act="relu"),
                                  block_type=("C", "C", ("C", "T"), ("C", "T"))),
                            224),
    "coatnext_nano_rw_224": (_coat(_D_NANO, (3, 4, 6, 3), (32, 64), _CONVNEXT, replace(_COAT_T, shortcut_bias=True)),
                             224),
    # CoAtNet as in the paper
    "coatnet_0_224": (_paper_coat(_D_0, (2, 3, 5, 2), 64), 224),
    "coatnet_1_224": (_paper_coat(_D_0, _D_14, 64), 224),
    "coatnet_2_224": (_paper_coat(_D_2, _D_14, 128), 224),
    "coatnet_3_224": (_paper_coat(_D_3, _D_14, 192), 224),
    "coatnet_4_224": (_paper_coat(_D_3, (2, 12, 28, 2), 192), 224),
    "coatnet_5_224": (_paper_coat((256, 512, 1280, 2048), (2, 12, 28, 2), 192), 224),
    # MaxViT, timm-trained
    "maxvit_pico_rw_256": (_maxvit(_D_PICO, (2, 2, 5, 2), (24, 32)), 256),
    "maxvit_nano_rw_256": (_maxvit(_D_NANO, (1, 2, 3, 1), (32, 64)), 256),
    "maxvit_tiny_rw_224": (_maxvit(_D_NANO, (2, 2, 5, 2), (32, 64)), 224),
    "maxvit_tiny_rw_256": (_maxvit(_D_NANO, (2, 2, 5, 2), (32, 64)), 256),
    "maxvit_rmlp_pico_rw_256": (_maxvit(_D_PICO, (2, 2, 5, 2), (24, 32), t=replace(_RW_T, **_RMLP)), 256),
    "maxvit_rmlp_nano_rw_256": (_maxvit(_D_NANO, (1, 2, 3, 1), (32, 64), t=replace(_RW_T, **_RMLP)), 256),
    "maxvit_rmlp_tiny_rw_256": (_maxvit(_D_NANO, (2, 2, 5, 2), (32, 64), t=replace(_RW_T, **_RMLP)), 256),
    "maxvit_rmlp_small_rw_224": (_maxvit(_D_0, (2, 2, 5, 2), (32, 64), t=replace(_RW_T, **_RMLP, **_LS)), 224),
    "maxvit_rmlp_small_rw_256": (_maxvit(_D_0, (2, 2, 5, 2), (32, 64), t=replace(_RW_T, **_RMLP, **_LS)), 256),
    "maxvit_rmlp_base_rw_224": (_maxvit(_D_0, _D_14, (32, 64), t=replace(_RW_T, **_RMLP), head_hidden_size=768),
                                224),
    "maxvit_rmlp_base_rw_384": (_maxvit(_D_0, _D_14, (32, 64), t=replace(_RW_T, **_RMLP), head_hidden_size=768),
                                384),
    "maxvit_tiny_pm_256": (_maxvit(_D_NANO, (2, 2, 5, 2), (32, 64), block_type=("PM",) * 4), 256),
    # MaxxViT: ConvNeXt conv blocks; V2 drops block attention
    "maxxvit_rmlp_nano_rw_256": (_maxvit(_D_NANO, (1, 2, 3, 1), (32, 64), _CONVNEXT, replace(_RW_T, **_RMLP, **_LS)),
                                 256),
    "maxxvit_rmlp_tiny_rw_256": (_maxvit(_D_NANO, (2, 2, 5, 2), (32, 64), _CONVNEXT, replace(_RW_T, **_RMLP, **_LS)),
                                 256),
    "maxxvit_rmlp_small_rw_256": (_maxvit(_D_0, (2, 2, 5, 2), (48, 96), _CONVNEXT, replace(_RW_T, **_RMLP, **_LS)),
                                  256),
    "maxxvitv2_nano_rw_256": (_maxvit(_D_0, (1, 2, 3, 1), (48, 96), _CONVNEXT,
                                      replace(_RW_T, no_block_attn=True, **_LS)), 256),
    "maxxvitv2_rmlp_base_rw_224": (_maxvit(_D_2, (2, 6, 12, 2), (64, 128), _CONVNEXT,
                                           replace(_RW_T, no_block_attn=True, **_RMLP, **_LS)), 224),
    "maxxvitv2_rmlp_base_rw_384": (_maxvit(_D_2, (2, 6, 12, 2), (64, 128), _CONVNEXT,
                                           replace(_RW_T, no_block_attn=True, **_RMLP, **_LS)), 384),
    "maxxvitv2_rmlp_large_rw_224": (_maxvit((160, 320, 640, 1280), (2, 6, 16, 2), (80, 160), _CONVNEXT,
                                            replace(_RW_T, no_block_attn=True, **_RMLP, **_LS),
                                            head_hidden_size=1280), 224),
    # MaxViT, official TF weights
    **{f"maxvit_{n}_tf_{s}": (_tf(dims, depths, stem), s)
       for n, dims, depths, stem in (("tiny", _D_NANO, (2, 2, 5, 2), 64), ("small", _D_0, (2, 2, 5, 2), 64),
                                     ("base", _D_0, _D_14, 64), ("large", _D_2, _D_14, 128),
                                     ("xlarge", _D_3, _D_14, 192))
       for s in (224, 384, 512)},
    # tiny test models
    "test_coatnet": (_coat((32, 64, 96, 128), (1, 1, 2, 1), (16, 32), replace(_COAT_CONV, output_bias=True),
                           replace(_COAT_T, shortcut_bias=True)), 160),
    "test_maxvit": (_maxvit((32, 64, 96, 128), (1, 1, 1, 1), (16, 32)), 160),
}

VARIANTS: dict[str, Variant] = {name: _maxxvit(cfg, img_size=size) for name, (cfg, size) in _CFGS.items()}
register_family("maxxvit", VARIANTS)
