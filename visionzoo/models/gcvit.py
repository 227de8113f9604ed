"""GC ViT (Hatamizadeh et al., 2023, "Global Context Vision Transformers").

Window attention with a relative position bias, alternating *local* blocks (queries, keys and
values from the window) with *global* blocks whose queries come from a global token generator:
the whole stage input is reduced to one window-sized map by a few fused-MBConv + max-pool steps,
and every window attends from those shared global queries to its own keys and values, so each
window sees image-wide context without extra attention cost. Downsampling (and the stem's second
half) is a fused-MBConv block followed by a strided 3x3 conv, between channel LayerNorms.
Window sizes follow the image size (``img_size / (32, 32, 16, 32)``), so a model is built for one
input size (``fixed_input_size``).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint

from ..layers.drop import DropPath, drop_path_rates
from ..layers.helpers import to_2tuple
from ..layers.layer_scale import LayerScale
from ..layers.mlp import Mlp
from ..layers.norm import LayerNorm2d
from ..layers.pool import ClassifierHead
from ..layers.rel_pos_bias import RelPosBias
from ..layers.squeeze_excite import SEModule
from ..layers.window_attention import window_partition, window_reverse
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["GlobalContextVit", "WindowAttentionGlobal", "GlobalContextVitBlock", "VARIANTS"]

_Size = tuple[int, int]
_Norm2d = partial(LayerNorm2d, eps=1e-5)


class MbConvBlock(nn.Module):
    """Residual ``dwconv3x3 -> GELU -> SE(1/4) -> pwconv`` (no norms, no biases)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.act = nn.GELU()
        self.se = SEModule(dim, rd_channels=int(dim * 0.25), bias=False, act_layer="gelu")
        self.conv_pw = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_pw(self.se(self.act(self.conv_dw(x))))


class Downsample2d(nn.Module):
    """``norm -> MBConv -> 3x3 stride-2 conv -> norm`` (NCHW)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.norm1 = _Norm2d(dim)
        self.conv_block = MbConvBlock(dim)
        self.reduction = nn.Conv2d(dim, dim_out, 3, stride=2, padding=1, bias=False)
        self.norm2 = _Norm2d(dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.reduction(self.conv_block(self.norm1(x))))


class Stem(nn.Module):
    """3x3 stride-2 conv then a :class:`Downsample2d` at the same width (reduction 4)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1)
        self.down = Downsample2d(out_chs, out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.conv1(x))


class GlobalQueryGen(nn.Module):
    """The global token generator: ``max(1, levels)`` MBConv blocks, the first ``levels`` of them
    followed by a 3x3 stride-2 max pool, taking the stage map down to the window size."""

    def __init__(self, dim: int, levels: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential()
        for i in range(max(1, levels)):
            self.blocks.add_module(f"conv{i + 1}", MbConvBlock(dim))
            if i < levels:
                self.blocks.add_module(f"pool{i + 1}", nn.MaxPool2d(3, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class WindowAttentionGlobal(nn.Module):
    """Window attention with a relative position bias over ``[B * nW, N, C]`` windows.

    ``use_global``: only keys and values are projected from the window; queries are the global
    tokens ``q_global`` (``[B, Wh, Ww, C]``, one window-sized map per image, shared by all of
    that image's windows).
    """

    def __init__(self, dim: int, num_heads: int, window_size: _Size, use_global: bool = True,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.use_global = use_global
        self.rel_pos = RelPosBias(window_size, num_heads)
        self.qkv = nn.Linear(dim, dim * (2 if use_global else 3), bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        if self.use_global and q_global is not None:
            k, v = self.qkv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            nb = q_global.shape[0]
            q = q_global.reshape(nb, 1, n, self.num_heads, self.head_dim).expand(-1, b // nb, -1, -1, -1)
            q = q.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        else:
            q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.rel_pos((q * self.scale) @ k.transpose(-2, -1))
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class GlobalContextVitBlock(nn.Module):
    """``x + ls1(attn(norm1(x)))`` over windows, then ``x + ls2(mlp(norm2(x)))``; NHWC."""

    def __init__(self, dim: int, *, num_heads: int, window_size: _Size, use_global: bool, mlp_ratio: float = 4.0,
                 layer_scale: float | None = None, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionGlobal(dim, num_heads, window_size, use_global=use_global, attn_drop=attn_drop,
                                          proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _window_attn(self, x: torch.Tensor, q_global: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        wh, ww = self.window_size
        windows = window_partition(x, self.window_size).reshape(-1, wh * ww, c)
        windows = self.attn(windows, q_global)
        return window_reverse(windows.reshape(-1, wh, ww, c), self.window_size, h, w)

    def forward(self, x: torch.Tensor, q_global: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self._window_attn(self.norm1(x), q_global)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class GlobalContextVitStage(nn.Module):
    """Optional downsampling, the global query generator, alternating local/global blocks and
    (last stage) a LayerNorm. NCHW in and out, NHWC inside."""

    def __init__(self, dim: int, out_dim: int, *, depth: int, num_heads: int, feat_size: _Size, window_size: _Size,
                 downsample: bool, stage_norm: bool, drop_path: Sequence[float] = (), **block_kwargs: Any) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample2d(dim, out_dim) if downsample else nn.Identity()
        levels = int(math.log2(min(feat_size) / min(window_size)))
        self.global_block = GlobalQueryGen(out_dim, levels)
        rates = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList([
            GlobalContextVitBlock(out_dim, num_heads=num_heads, window_size=window_size, use_global=i % 2 == 1,
                                  drop_path=rates[i], **block_kwargs)
            for i in range(depth)])
        self.norm = nn.LayerNorm(out_dim) if stage_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        q_global = self.global_block(x).permute(0, 2, 3, 1)
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, q_global, use_reentrant=False)
            else:
                x = blk(x, q_global)
        return self.norm(x).permute(0, 3, 1, 2)


class GlobalContextVit(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """GC ViT backbone (NCHW stage outputs; the last stage ends with a LayerNorm) and pooled head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        img_size: int | Sequence[int] = 224,
        window_ratio: Sequence[int] = (32, 32, 16, 32),
        embed_dim: int = 64,
        depths: Sequence[int] = (3, 4, 19, 5),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        mlp_ratio: float = 3.0,
        layer_scale: float | None = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(depths)
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        img = to_2tuple(img_size)
        dims = [embed_dim * 2 ** i for i in range(n)]
        self.stem = Stem(in_chans, embed_dim)
        rates = drop_path_rates(drop_path_rate, list(depths))
        stages = []
        for i in range(n):
            red = 4 * 2 ** i
            stages.append(GlobalContextVitStage(
                dims[max(i - 1, 0)], dims[i], depth=depths[i], num_heads=num_heads[i],
                feat_size=(img[0] // red, img[1] // red),
                window_size=(img[0] // window_ratio[i], img[1] // window_ratio[i]),
                downsample=i > 0, stage_norm=i == n - 1, drop_path=rates[i], mlp_ratio=mlp_ratio,
                layer_scale=layer_scale, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f"stages.{i}") for i in range(n)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = ClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    # FeatureMixin hooks: the stage outputs are the levels (the last already normed)
    _stem_level = False


# --- variants ----------------------------------------------------------------------------------
_xxtiny = Variant(GlobalContextVit, depths=(2, 2, 6, 2), num_heads=(2, 4, 8, 16))

VARIANTS: dict[str, Variant] = {
    "gcvit_xxtiny": _xxtiny,
    "gcvit_xtiny": _xxtiny.but(depths=(3, 4, 6, 5)),
    "gcvit_tiny": _xxtiny.but(depths=(3, 4, 19, 5)),
    "gcvit_small": _xxtiny.but(depths=(3, 4, 19, 5), embed_dim=96, num_heads=(3, 6, 12, 24), mlp_ratio=2.0,
                               layer_scale=1e-5),
    "gcvit_base": _xxtiny.but(depths=(3, 4, 19, 5), embed_dim=128, num_heads=(4, 8, 16, 32), mlp_ratio=2.0,
                              layer_scale=1e-5),
}

register_family("gcvit", VARIANTS)
