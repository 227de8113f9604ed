"""TinyViT (Wu et al., 2022, "TinyViT: Fast Pretraining Distillation for Small Vision Transformers").

A small hierarchical hybrid: a two-conv stem (stride 4), a first stage of MBConv blocks, then
three stages of window-attention blocks. Each later stage starts with a conv patch merging
(1x1 -> depthwise 3x3 stride 2 -> 1x1, conv-BN). An attention block is
``x + attn(x)`` in non-overlapping windows (no shift: a depthwise 3x3 conv-BN after the attention
mixes neighbouring windows) then ``x + mlp(x)``; attention and MLP carry their own pre-norm. The
attention adds a LeViT-style learned bias per head and absolute offset ``(|dy|, |dx|)`` in the
window, so checkpoints fine-tuned with other windows (384 / 512 px) resample that table on load.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention_bias import offset_bias_index, resample_offset_bias
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import NormMlpClassifierHead
from ..layers.window_attention import window_partition, window_reverse
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["TinyVit", "TinyVitBlock", "VARIANTS"]


def _cbn(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> ConvNormAct:
    """conv (no bias) + BatchNorm, no activation: TinyViT's ``ConvNorm``."""
    return ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                       apply_act=False)


class PatchEmbed(nn.Module):
    """Two 3x3 stride-2 conv-BN layers with a GELU between: stride 4."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1 = _cbn(in_chs, out_chs // 2, 3, 2)
        self.act = nn.GELU()
        self.conv2 = _cbn(out_chs // 2, out_chs, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class MBConv(nn.Module):
    """Inverted residual (1x1 expand, depthwise 3x3, 1x1 project, conv-BN each) with GELU after the sum."""

    def __init__(self, dim: int, expand_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = _cbn(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = _cbn(hidden, hidden, 3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = _cbn(hidden, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """Conv downsampling between stages: 1x1, depthwise 3x3 stride 2, 1x1 (conv-BN, GELU between)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = _cbn(dim, out_dim)
        self.act1 = nn.GELU()
        self.conv2 = _cbn(out_dim, out_dim, 3, 2, groups=out_dim)
        self.act2 = nn.GELU()
        self.conv3 = _cbn(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


class ConvStage(nn.Module):
    """The first stage: MBConv blocks at the stem's resolution."""

    def __init__(self, dim: int, depth: int, drop_path: Sequence[float] = (), expand_ratio: float = 4.0) -> None:
        super().__init__()
        self.grad_checkpointing = False
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(*[MBConv(dim, expand_ratio, rates[i]) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class OffsetBiasAttention(nn.Module):
    """Multi-head attention over a ``window x window`` token grid with a learned bias per offset.

    ``norm`` (LayerNorm) is applied to the input first; ``attention_bias_idxs`` is a derived,
    non-persistent buffer.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.window_size = window_size
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("attention_bias_idxs", self._index(), persistent=False)

    def _index(self) -> torch.Tensor:
        ws = (self.window_size, self.window_size)
        return offset_bias_index(ws, ws, self.window_size, device=self.attention_biases.device)

    def init_non_persistent_buffers(self) -> None:
        self.attention_bias_idxs = self._index()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = self.norm(x)
        # per head: [q | k | v], each head_dim wide
        q, k, v = self.qkv(x).reshape(b, n, self.num_heads, 3, self.head_dim).permute(3, 0, 2, 1, 4).unbind(0)
        bias = self.attention_biases[:, self.attention_bias_idxs].unsqueeze(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class NormMlp(nn.Module):
    """LayerNorm -> fc1 -> GELU -> fc2 (the norm sits inside the MLP in TinyViT checkpoints)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyVitBlock(nn.Module):
    """Window attention (no shift, zero-padded to whole windows), depthwise 3x3 conv-BN, MLP. NHWC."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, local_conv_size: int = 3) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = OffsetBiasAttention(dim, num_heads, window_size)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = NormMlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.local_conv = _cbn(dim, dim, local_conv_size, groups=dim)

    def _window_attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            return self.attn(x.reshape(b, h * w, c)).reshape(b, h, w, c)
        ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        windows = window_partition(x, (ws, ws)).reshape(-1, ws * ws, c)
        windows = self.attn(windows).reshape(-1, ws, ws, c)
        return window_reverse(windows, (ws, ws), hp, wp)[:, :h, :w, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self._window_attn(x))
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.drop_path2(self.mlp(x))


class TinyVitStage(nn.Module):
    """Conv patch merging (NCHW), then attention blocks on NHWC tokens; NCHW in and out."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float = 4.0, drop_path: Sequence[float] = ()) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = PatchMerging(dim, out_dim)
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(*[TinyVitBlock(out_dim, num_heads, window_size, mlp_ratio, rates[i])
                                      for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x).permute(0, 2, 3, 1)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return x.permute(0, 3, 1, 2)


class TinyVit(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """TinyViT: conv stem, MBConv stage, window-attention stages, pool -> LayerNorm -> fc head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.grad_checkpointing = False
        self.window_sizes = tuple(window_sizes)
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages: list[nn.Module] = [ConvStage(embed_dims[0], depths[0], rates[0], mbconv_expand_ratio)]
        for i in range(1, len(depths)):
            stages.append(TinyVitStage(embed_dims[i - 1], embed_dims[i], depths[i], num_heads[i], window_sizes[i],
                                       mlp_ratio, rates[i]))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head = NormMlpClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                          norm_layer="layernorm2d")
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    # FeatureMixin hooks: the trunk is the stages (NCHW); each stage end is one level
    _stem_level = False

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.patch_embed(x), None

    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample ``attention_biases`` for a model built with other window sizes; drop derived index
        buffers."""
        own = model.state_dict()
        out: dict[str, Any] = {}
        for k, v in state_dict.items():
            if k.endswith("attention_bias_idxs"):
                continue
            if k.endswith("attention_biases") and k in own and v.shape != own[k].shape:
                new_res = int(round(own[k].shape[1] ** 0.5))
                v = resample_offset_bias(v, new_res)
            out[k] = v
        return out


# --- variants ----------------------------------------------------------------------------------
_5M = Variant(TinyVit, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2), num_heads=(2, 4, 5, 10),
              drop_path_rate=0.0)
_11M = Variant(TinyVit, embed_dims=(64, 128, 256, 448), depths=(2, 2, 6, 2), num_heads=(2, 4, 8, 14),
               drop_path_rate=0.1)
_21M = Variant(TinyVit, embed_dims=(96, 192, 384, 576), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 18),
               drop_path_rate=0.2)

VARIANTS: dict[str, Variant] = {
    "tiny_vit_5m_224": _5M,
    "tiny_vit_11m_224": _11M,
    "tiny_vit_21m_224": _21M,
    "tiny_vit_21m_384": _21M.but(window_sizes=(12, 12, 24, 12), drop_path_rate=0.1),
    "tiny_vit_21m_512": _21M.but(window_sizes=(16, 16, 32, 16), drop_path_rate=0.1),
}

register_family("tiny_vit", VARIANTS)
