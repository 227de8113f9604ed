"""LeViT: a vision transformer in ConvNet's clothing for faster inference (Graham et al., ICCV 2021,
arXiv:2104.01136).

A conv stem (four stride-2 3x3 conv+BN with hard-swish; three for the ``_s8`` models) feeds three
stages of attention + MLP residual blocks on a shrinking grid. Every linear layer is followed by
BatchNorm (foldable at inference), attention has a learned bias per head and 2-D offset
(``attention_biases``, shared table code in ``layers/attention_bias.py``), values are wider than
keys, and stages are joined by *shrinking attention*: queries from a stride-2 subsampled grid,
keys/values from the full grid. Two execution modes with the same weights' layout (up to the
kernel's trailing ``1x1``): tokens ``[B, N, C]`` with linear layers (``levit_*``) or NCHW maps with
1x1 convs (``levit_conv_*``). Distilled models carry a second head (``head_dist``) trained against
a CNN teacher; at inference the two heads are averaged.

A checkpoint meeting a model built for another ``img_size`` has its bias tables resampled
(``checkpoint_filter_fn``), and conv-mode / linear-mode checkpoints load into each other.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType, get_act_layer
from ..layers.attention_bias import offset_bias_index, resample_offset_bias
from ..layers.distill import DistilledHeadsMixin
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .efficientvit_msra import NormLinearHead

__all__ = ["Levit", "LevitDistilled"]


class ConvNorm(nn.Module):
    """Conv (``linear``, no bias) + BatchNorm2d (``bn``)."""

    def __init__(self, in_chs: int, out_chs: int, k: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.linear = nn.Conv2d(in_chs, out_chs, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.linear(x))


class LinearNorm(nn.Module):
    """Linear (``linear``, no bias) + BatchNorm1d (``bn``) over the tokens of ``[B, N, C]``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def _ln(in_chs: int, out_chs: int, use_conv: bool) -> nn.Module:
    return ConvNorm(in_chs, out_chs) if use_conv else LinearNorm(in_chs, out_chs)


class _ActNorm(nn.Sequential):
    """Hard-swish then linear+BN (``act`` / ``ln``): the attention output projection."""

    def __init__(self, in_chs: int, out_chs: int, use_conv: bool, act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        self.act = act_layer()
        self.ln = _ln(in_chs, out_chs, use_conv)


class _OffsetBias(nn.Module):
    """Owner of ``attention_biases`` and its non-persistent index for a fixed grid."""

    def _init_bias(self, heads: int, resolution: int, stride: int) -> None:
        self.resolution, self.stride = resolution, stride
        self.resolution_out = (resolution - 1) // stride + 1
        self.attention_biases = nn.Parameter(torch.zeros(heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", self._index(), persistent=False)

    def _index(self) -> torch.Tensor:
        r, ro = self.resolution, self.resolution_out
        return offset_bias_index((ro, ro), (r, r), r, self.stride, device=self.attention_biases.device)

    def init_non_persistent_buffers(self) -> None:
        self.attention_bias_idxs = self._index()

    def _bias(self) -> torch.Tensor:
        return self.attention_biases[:, self.attention_bias_idxs]


class Attention(_OffsetBias):
    """Multi-head attention with per-offset biases; values ``attn_ratio`` times wider than keys."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int,
                 use_conv: bool, act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        self.use_conv, self.num_heads, self.key_dim = use_conv, num_heads, key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self._init_bias(num_heads, resolution, 1)  # the table comes first in the checkpoint layout
        self.qkv = _ln(dim, (2 * key_dim + self.val_dim) * num_heads, use_conv)
        self.proj = _ActNorm(self.val_dim * num_heads, dim, use_conv, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = [self.key_dim, self.key_dim, self.val_dim]
        if self.use_conv:
            b, _, h, w = x.shape
            q, k, v = self.qkv(x).view(b, self.num_heads, -1, h * w).split(split, dim=2)
            attn = ((q.transpose(-2, -1) @ k) * self.scale + self._bias()).softmax(dim=-1)
            x = (v @ attn.transpose(-2, -1)).reshape(b, -1, h, w)
        else:
            b, n, _ = x.shape
            q, k, v = self.qkv(x).view(b, n, self.num_heads, -1).split(split, dim=3)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            attn = ((q @ k.transpose(-2, -1)) * self.scale + self._bias()).softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(x)


class Subsample(nn.Module):
    """Every ``stride``-th token of the ``resolution x resolution`` grid (tokens or NCHW)."""

    def __init__(self, stride: int, resolution: int, use_conv: bool) -> None:
        super().__init__()
        self.stride, self.resolution, self.use_conv = stride, resolution, use_conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if self.use_conv:
            return x[:, :, ::s, ::s]
        b, _, c = x.shape
        return x.view(b, self.resolution, self.resolution, c)[:, ::s, ::s].reshape(b, -1, c)


class _QueryProj(nn.Sequential):
    def __init__(self, stride: int, resolution: int, dim: int, out: int, use_conv: bool) -> None:
        super().__init__()
        self.subsample = Subsample(stride, resolution, use_conv)
        self.ln = _ln(dim, out, use_conv)


class AttentionSubsample(_OffsetBias):
    """Shrinking attention: queries from the stride-2 grid, keys/values from the full one."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 stride: int, resolution: int, use_conv: bool, act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        self.use_conv, self.num_heads, self.key_dim = use_conv, num_heads, key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self._init_bias(num_heads, resolution, stride)
        self.kv = _ln(in_dim, (key_dim + self.val_dim) * num_heads, use_conv)
        self.q = _QueryProj(stride, resolution, in_dim, key_dim * num_heads, use_conv)
        self.proj = _ActNorm(self.val_dim * num_heads, out_dim, use_conv, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ro = self.resolution_out
        if self.use_conv:
            b = x.shape[0]
            k, v = self.kv(x).view(b, self.num_heads, -1, x.shape[2] * x.shape[3]).split(
                [self.key_dim, self.val_dim], dim=2)
            q = self.q(x).view(b, self.num_heads, self.key_dim, ro * ro)
            attn = ((q.transpose(-2, -1) @ k) * self.scale + self._bias()).softmax(dim=-1)
            x = (v @ attn.transpose(-2, -1)).reshape(b, -1, ro, ro)
        else:
            b, n, _ = x.shape
            k, v = self.kv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.val_dim], dim=3)
            k, v = k.transpose(1, 2), v.transpose(1, 2)
            q = self.q(x).view(b, ro * ro, self.num_heads, self.key_dim).transpose(1, 2)
            attn = ((q @ k.transpose(-2, -1)) * self.scale + self._bias()).softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(b, ro * ro, -1)
        return self.proj(x)


class LevitMlp(nn.Module):
    """linear+BN -> hard-swish -> linear+BN."""

    def __init__(self, dim: int, hidden: int, use_conv: bool, drop: float = 0.0,
                 act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        self.ln1 = _ln(dim, hidden, use_conv)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.ln2 = _ln(hidden, dim, use_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.drop(self.act(self.ln1(x))))


class LevitBlock(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: int, use_conv: bool,
                 attn_ratio: float = 2.0, mlp_ratio: float = 2.0, drop_path: float = 0.0,
                 act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio, resolution, use_conv, act_layer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = LevitMlp(dim, int(dim * mlp_ratio), use_conv, act_layer=act_layer)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(x))
        return x + self.drop_path2(self.mlp(x))


class LevitDownsample(nn.Module):
    """Shrinking attention (no shortcut: the width changes) then a residual MLP."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, resolution: int, use_conv: bool,
                 drop_path: float = 0.0, act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        self.attn_downsample = AttentionSubsample(in_dim, out_dim, key_dim, in_dim // key_dim, 4.0, 2,
                                                  resolution, use_conv, act_layer)
        self.mlp = LevitMlp(out_dim, out_dim * 2, use_conv, act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_downsample(x)
        return x + self.drop_path(self.mlp(x))


class LevitStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, key_dim: int, depth: int, num_heads: int, resolution: int,
                 downsample: bool, use_conv: bool, dpr: Sequence[float], act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample: nn.Module = LevitDownsample(in_dim, dim, key_dim, resolution, use_conv,
                                                         act_layer=act_layer)
            resolution = (resolution - 1) // 2 + 1
        else:
            self.downsample = nn.Identity()
        self.resolution = resolution
        self.blocks = nn.Sequential(*[LevitBlock(dim, key_dim, num_heads, resolution, use_conv, drop_path=dpr[i],
                                                 act_layer=act_layer)
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Stem(nn.Sequential):
    """``n`` stride-2 3x3 conv+BN with hard-swish between them (stride 16 or 8)."""

    def __init__(self, in_chs: int, out_chs: int, n: int = 4, act_layer: type = nn.Hardswish) -> None:
        super().__init__()
        chs = [in_chs] + [out_chs // 2 ** (n - 1 - i) for i in range(n)]
        for i in range(n):
            self.add_module(f"conv{i + 1}", ConvNorm(chs[i], chs[i + 1], 3, 2))
            if i < n - 1:
                self.add_module(f"act{i + 1}", act_layer())


class Levit(FeatureMixin, ModelForwardMixin, nn.Module):
    """Conv stem, three attention stages (strides 16/32/64, or 8/16/32 for ``_s8``), mean-pooled
    BN-linear head. ``use_conv``: NCHW maps and 1x1 convs instead of tokens and linears."""

    feature_cfg = {"feature_cls": "getter"}
    _stem_level = False

    def __init__(self, *, img_size: int = 224, embed_dim: Sequence[int] = (128, 256, 384), key_dim: int = 16,
                 depth: Sequence[int] = (2, 3, 4), num_heads: Sequence[int] = (4, 6, 8), stem_stride: int = 16,
                 use_conv: bool = False, act_layer: LayerType = "hard_swish", num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"LeViT pools by token mean ('avg') or not at all (''), got {global_pool!r}")
        self.num_classes, self.grad_checkpointing, self.drop_rate = num_classes, False, drop_rate
        self.use_conv, self.global_pool = use_conv, global_pool
        act = get_act_layer(act_layer)
        self.stem = Stem(in_chans, embed_dim[0], 4 if stem_stride == 16 else 3, act)
        resolution = img_size // stem_stride
        dpr = drop_path_rates(drop_path_rate, list(depth))
        stages, self.feature_info = [], []
        stride = stem_stride
        for i in range(len(embed_dim)):
            stage = LevitStage(embed_dim[max(i - 1, 0)], embed_dim[i], key_dim, depth[i], num_heads[i], resolution,
                               i > 0, use_conv, dpr[i], act)
            if i > 0:
                stride *= 2
            resolution = stage.resolution
            stages.append(stage)
            self.feature_info.append(dict(num_chs=embed_dim[i], reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.head = self._make_head(num_classes)

    def _make_head(self, num_classes: int) -> nn.Module:
        head = NormLinearHead(self.num_features, num_classes, self.drop_rate) if num_classes > 0 else nn.Identity()
        return head.train(self.training)  # a new head follows the model's mode (its BN in eval)

    def get_classifier(self) -> nn.Module:
        return self.head.linear if isinstance(self.head, NormLinearHead) else self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = self._make_head(num_classes)

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.stem(x)
        return (x if self.use_conv else x.flatten(2).transpose(1, 2)), None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if not self.use_conv:  # tokens -> square grid
            side = int(round(x.shape[1] ** 0.5))
            x = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(-2, -1)) if self.use_conv else x.mean(dim=1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self._pool(x)
        return x if pre_logits else self.head(x)

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
        """Fit a checkpoint to ``model``: drop stored bias indices, resample offset-bias tables to
        the model's grids (another ``img_size``), and reshape linear <-> 1x1-conv weights."""
        own = model.state_dict()
        out = {}
        for k, v in state_dict.items():
            if k.endswith("attention_bias_idxs"):
                continue
            if k in own:
                if k.endswith("attention_biases") and own[k].shape != v.shape:
                    v = resample_offset_bias(v, int(round(own[k].shape[1] ** 0.5)))
                elif v.ndim != own[k].ndim and v.numel() == own[k].numel():
                    v = v.reshape(own[k].shape)
            out[k] = v
        return out


class LevitDistilled(DistilledHeadsMixin, Levit):
    """LeViT with a distillation head ``head_dist``: at inference the two heads are averaged; with
    ``set_distilled_training(True)`` in training mode both logits are returned."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_heads(self.num_classes)

    _make_head = Levit._make_head
    get_classifier = Levit.get_classifier

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self._pool(x)
        return x if pre_logits else self._distilled_heads(x)


def _cfgs() -> dict[str, dict]:
    return {
        "128s": dict(embed_dim=(128, 256, 384), key_dim=16, num_heads=(4, 6, 8), depth=(2, 3, 4)),
        "128": dict(embed_dim=(128, 256, 384), key_dim=16, num_heads=(4, 8, 12), depth=(4, 4, 4)),
        "192": dict(embed_dim=(192, 288, 384), key_dim=32, num_heads=(3, 5, 6), depth=(4, 4, 4)),
        "256": dict(embed_dim=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depth=(4, 4, 4)),
        "384": dict(embed_dim=(384, 512, 768), key_dim=32, num_heads=(6, 9, 12), depth=(4, 4, 4)),
        "384_s8": dict(embed_dim=(384, 512, 768), key_dim=32, num_heads=(6, 9, 12), depth=(4, 4, 4), stem_stride=8,
                       act_layer="silu"),
        "512": dict(embed_dim=(512, 768, 1024), key_dim=64, num_heads=(8, 12, 16), depth=(4, 4, 4),
                    act_layer="silu"),
        "512_s8": dict(embed_dim=(512, 640, 896), key_dim=64, num_heads=(8, 10, 14), depth=(4, 4, 4), stem_stride=8,
                       act_layer="silu"),
        "256d": dict(embed_dim=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depth=(4, 8, 6),
                     act_layer="silu"),
        "512d": dict(embed_dim=(512, 640, 768), key_dim=64, num_heads=(8, 10, 12), depth=(4, 8, 6),
                     act_layer="silu"),
    }


_UNDISTILLED = {"256d", "512", "512_s8", "512d"}  # published without a distillation head
_CONV_FEATURES = {"feature_cls": "list", "flatten_sequential": True}


def _variant(key: str, use_conv: bool) -> Variant:
    cls: type = Levit if key in _UNDISTILLED else LevitDistilled
    return Variant(cls, feature_cfg=_CONV_FEATURES if use_conv else None, use_conv=use_conv, **_cfgs()[key])


VARIANTS: dict[str, Variant] = {
    **{f"levit_{k}": _variant(k, False) for k in _cfgs()},
    **{f"levit_conv_{k}": _variant(k, True) for k in _cfgs()},
}
register_family("levit", VARIANTS)
