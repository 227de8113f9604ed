"""EfficientViT (MSRA): memory-efficient vision transformer with cascaded group attention
(Liu et al., CVPR 2023, arXiv:2305.07027).

A ``sandwich`` block puts one attention layer between depthwise-conv / FFN pairs
(``dw0 -> ffn0 -> attention -> dw1 -> ffn1``, each residual). The attention is a *cascaded group
attention*: head ``i`` sees its own channel split plus head ``i-1``'s output, has its own 1x1 qkv
and a depthwise conv on its queries, and adds a learned bias per 2-D offset. Attention runs in
local windows (7x7) when the map is larger. Every conv is conv+BN so the net folds for inference.
Stages are joined by inverted-residual patch merging with squeeze-excite, wrapped in dw+FFN
residuals on both sides. The head is BatchNorm1d + linear on the pooled features.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention_bias import offset_bias_index, resample_offset_bias
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from ..layers.squeeze_excite import SEModule
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["EfficientVitMsra", "CascadedGroupAttention", "LocalWindowAttention"]


def _cbn(in_chs: int, out_chs: int, k: int = 1, stride: int = 1, groups: int = 1) -> ConvNormAct:
    """Conv (no bias) + BatchNorm as ``conv`` / ``bn``: the unit every layer here is built of."""
    return ConvNormAct(in_chs, out_chs, k, stride=stride, groups=groups, apply_act=False)


class Residual(nn.Module):
    """``x + drop_path(m(x))``, the module kept as ``m`` (the checkpoint layout)."""

    def __init__(self, m: nn.Module, drop_path: float = 0.0) -> None:
        super().__init__()
        self.m = m
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.m(x))


class ConvFfn(nn.Sequential):
    """1x1 expand -> ReLU -> 1x1 project, each conv+BN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = _cbn(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = _cbn(hidden, dim)


class CascadedGroupAttention(nn.Module):
    """Heads in a cascade: head ``i``'s input is its channel split plus head ``i-1``'s output.

    ``qkvs[i]`` makes ``key_dim`` queries and keys and ``val_dim`` values from ``dim / heads``
    channels; ``dws[i]`` (kernel ``kernels[i]``) mixes the queries locally; a learned bias per
    offset (``attention_biases``) is added to the logits. ``proj`` is ReLU + conv-BN over the
    concatenated head outputs.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: int, kernels: Sequence[int]) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.resolution = num_heads, key_dim, resolution
        self.scale = key_dim ** -0.5
        self.val_dim = dim // num_heads
        self.qkvs = nn.ModuleList([_cbn(dim // num_heads, 2 * key_dim + self.val_dim) for _ in range(num_heads)])
        self.dws = nn.ModuleList([_cbn(key_dim, key_dim, kernels[i], groups=key_dim) for i in range(num_heads)])
        self.proj = nn.Sequential(nn.ReLU(), _cbn(self.val_dim * num_heads, dim))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        self.register_buffer("attention_bias_idxs", self._index(resolution, resolution), persistent=False)

    def _index(self, h: int, w: int) -> torch.Tensor:
        return offset_bias_index((h, w), (h, w), self.resolution, device=self.attention_biases.device)

    def init_non_persistent_buffers(self) -> None:
        self.attention_bias_idxs = self._index(self.resolution, self.resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h == self.resolution and w == self.resolution:
            idx = self.attention_bias_idxs
        else:  # a smaller map (windows are never larger): the same offsets, fewer of them
            idx = offset_bias_index((h, w), (h, w), self.resolution, device=x.device)
        bias = self.attention_biases[:, idx]
        splits = x.chunk(self.num_heads, dim=1)
        outs: list[torch.Tensor] = []
        feat = splits[0]
        for i, (qkv, dw) in enumerate(zip(self.qkvs, self.dws)):
            if i > 0:
                feat = feat + splits[i]
            q, k, v = qkv(feat).split([self.key_dim, self.key_dim, self.val_dim], dim=1)
            q = dw(q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            attn = (q.transpose(-2, -1) @ k) * self.scale + bias[i]
            attn = attn.softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).reshape(b, self.val_dim, h, w)
            outs.append(feat)
        return self.proj(torch.cat(outs, dim=1))


class LocalWindowAttention(nn.Module):
    """Cascaded group attention inside non-overlapping ``window x window`` windows; a map no
    larger than a window is attended whole. Maps are zero-padded (bottom/right) to whole windows."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: int, window_resolution: int,
                 kernels: Sequence[int]) -> None:
        super().__init__()
        self.window = min(window_resolution, resolution)
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, self.window, kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws = self.window
        if h <= ws and w <= ws:
            return self.attn(x)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        x = F.pad(x, (0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.reshape(b, c, nh, ws, nw, ws).permute(0, 2, 4, 1, 3, 5).reshape(b * nh * nw, c, ws, ws)
        x = self.attn(x)
        x = x.reshape(b, nh, nw, c, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(b, c, ph, pw)
        return x[:, :, :h, :w].contiguous()


class SandwichBlock(nn.Module):
    """``dw0 -> ffn0 -> mixer -> dw1 -> ffn1``, every one residual."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: int, window: int,
                 kernels: Sequence[int], drop_path: float = 0.0) -> None:
        super().__init__()
        self.dw0 = Residual(_cbn(dim, dim, 3, groups=dim), drop_path)
        self.ffn0 = Residual(ConvFfn(dim, 2 * dim), drop_path)
        self.mixer = Residual(LocalWindowAttention(dim, key_dim, num_heads, resolution, window, kernels), drop_path)
        self.dw1 = Residual(_cbn(dim, dim, 3, groups=dim), drop_path)
        self.ffn1 = Residual(ConvFfn(dim, 2 * dim), drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


class PatchMerging(nn.Module):
    """Inverted residual with stride 2: 1x1 (x4) -> ReLU -> dw3x3/2 -> ReLU -> SE -> 1x1."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        hid = 4 * dim
        self.conv1 = _cbn(dim, hid)
        self.act1 = nn.ReLU()
        self.conv2 = _cbn(hid, hid, 3, stride=2, groups=hid)
        self.act2 = nn.ReLU()
        self.se = SEModule(hid, rd_ratio=0.25, rd_divisor=1)
        self.conv3 = _cbn(hid, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act2(self.conv2(self.act1(self.conv1(x))))))


class Stage(nn.Module):
    """Optional downsample (``res1`` dw+FFN, ``patchmerge``, ``res2`` dw+FFN) then sandwich blocks."""

    def __init__(self, in_dim: int, dim: int, key_dim: int, depth: int, num_heads: int, resolution: int,
                 window: int, kernels: Sequence[int], downsample: bool, dpr: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        if downsample:
            self.downsample = nn.Sequential()
            self.downsample.add_module("res1", nn.Sequential(Residual(_cbn(in_dim, in_dim, 3, groups=in_dim)),
                                                             Residual(ConvFfn(in_dim, 2 * in_dim))))
            self.downsample.add_module("patchmerge", PatchMerging(in_dim, dim))
            self.downsample.add_module("res2", nn.Sequential(Residual(_cbn(dim, dim, 3, groups=dim)),
                                                             Residual(ConvFfn(dim, 2 * dim))))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[SandwichBlock(dim, key_dim, num_heads, resolution, window, kernels, dpr[i])
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class NormLinearHead(nn.Module):
    """BatchNorm1d -> dropout -> linear, on pooled features (``bn`` / ``linear``)."""

    def __init__(self, dim: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(drop_rate)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.bn(x)))


class EfficientVitMsra(FeatureMixin, ModelForwardMixin, nn.Module):
    """Conv stem (stride 16), three stages of sandwich blocks (strides 16/32/64), pooled BN-linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, img_size: int = 224, embed_dim: Sequence[int] = (64, 128, 192), key_dim: int = 16,
                 depth: Sequence[int] = (1, 2, 3), num_heads: Sequence[int] = (4, 4, 4), window_size: int = 7,
                 kernels: Sequence[int] = (5, 5, 5, 5), num_classes: int = 1000, in_chans: int = 3,
                 global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing, self.drop_rate = num_classes, False, drop_rate
        d0 = embed_dim[0]
        self.patch_embed = nn.Sequential()
        chs = [in_chans, d0 // 8, d0 // 4, d0 // 2, d0]
        for i in range(4):
            self.patch_embed.add_module(f"conv{i + 1}", _cbn(chs[i], chs[i + 1], 3, stride=2))
            if i < 3:
                self.patch_embed.add_module(f"relu{i + 1}", nn.ReLU())
        resolution = img_size // 16
        dpr = drop_path_rates(drop_path_rate, list(depth))
        stages, self.feature_info = [], []
        stride = 16
        for i, (dim, d, heads) in enumerate(zip(embed_dim, depth, num_heads)):
            if i > 0:
                resolution = (resolution - 1) // 2 + 1
                stride *= 2
            stages.append(Stage(embed_dim[max(i - 1, 0)], dim, key_dim, d, heads, resolution, window_size,
                                kernels, i > 0, dpr[i]))
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head = NormLinearHead(self.num_features, num_classes, drop_rate) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head.linear if isinstance(self.head, NormLinearHead) else self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head = NormLinearHead(self.num_features, num_classes, self.drop_rate) if num_classes > 0 \
            else nn.Identity()
        self.head.train(self.training)  # a new head follows the model's mode (its BN in eval)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.patch_embed(x), None

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
        """Resample the offset-bias tables when the model was built for another image size."""
        own = model.state_dict()
        out = {}
        for k, v in state_dict.items():
            if k.endswith("attention_bias_idxs"):
                continue
            if k.endswith("attention_biases") and k in own and own[k].shape != v.shape:
                v = resample_offset_bias(v, int(own[k].shape[1] ** 0.5))
            out[k] = v
        return out


_m0 = Variant(EfficientVitMsra, embed_dim=(64, 128, 192), depth=(1, 2, 3), num_heads=(4, 4, 4),
              kernels=(5, 5, 5, 5))
VARIANTS: dict[str, Variant] = {
    "efficientvit_m0": _m0,
    "efficientvit_m1": _m0.but(embed_dim=(128, 144, 192), num_heads=(2, 3, 3), kernels=(7, 5, 3, 3)),
    "efficientvit_m2": _m0.but(embed_dim=(128, 192, 224), num_heads=(4, 3, 2), kernels=(7, 5, 3, 3)),
    "efficientvit_m3": _m0.but(embed_dim=(128, 240, 320), num_heads=(4, 3, 4), kernels=(5, 5, 5, 5)),
    "efficientvit_m4": _m0.but(embed_dim=(128, 256, 384), num_heads=(4, 4, 4), kernels=(7, 5, 3, 3)),
    "efficientvit_m5": _m0.but(embed_dim=(192, 288, 384), depth=(1, 3, 4), num_heads=(3, 3, 4),
                               kernels=(7, 5, 3, 3)),
}
register_family("efficientvit_msra", VARIANTS)
