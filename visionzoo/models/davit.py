"""DaViT (Ding et al., 2022, "DaViT: Dual Attention Vision Transformers").

Each stage alternates two attention types in pairs: *spatial* window attention (tokens attend to
the other tokens of their local window, as in Swin without shifts or position bias) and *channel
group* attention (the roles of tokens and channels swap: inside each head, every channel attends
to every other channel over all the image's positions, a global receptive field at linear cost in
the number of tokens). Every attention and MLP sub-block is preceded by a depthwise 3x3 conv
position encoding (``x + dwconv(x)``). A 7x7/4 conv stem and norm + strided-conv downsampling give
the usual four-stage hierarchy. The Florence-2 vision towers (``*_fl``) use a 3x3 downsampling
conv, 12x12 windows, channel attention scaled by the token count, and name the blocks of a pair.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.attention import Attention, scaled_dot_product_attention
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.helpers import to_2tuple
from ..layers.mlp import Mlp
from ..layers.norm import LayerNorm2d
from ..layers.pool import NormMlpClassifierHead
from ..layers.window_attention import window_partition, window_reverse
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["DaVit", "ChannelAttention", "SpatialBlock", "ChannelBlock", "VARIANTS"]

_Norm2d = partial(LayerNorm2d, eps=1e-5)


class ConvPosEnc(nn.Module):
    """Conditional position encoding ``x + dwconv3x3(x)`` on an NCHW map."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x)


class ChannelAttention(Attention):
    """Channel group attention over ``[B, N, C]`` tokens: per head, a ``d x d`` attention between
    channels, each channel's "token" being its values at all N positions.

    ``v2=False`` (DaViT): ``softmax(k^T v / sqrt(d))`` mixes the query channels,
    ``out^T = A q^T``. ``v2=True`` (Florence-2): ``softmax(q^T k / sqrt(N))``, ``out^T = A v^T``.
    Both are ordinary scaled-dot-product attention on the transposed per-head tensors.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, v2: bool = False) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias)
        self.v2 = v2

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 4, 1).unbind(0)
        # q, k, v: [B, heads, d, N] (channels as the sequence)
        if self.v2:
            x = scaled_dot_product_attention(q, k, v, self.fused_attn, scale=float(n) ** -0.5)
        else:
            x = scaled_dot_product_attention(k, v, q, self.fused_attn, scale=self.scale)
        x = x.permute(0, 3, 1, 2).reshape(b, n, c)  # [B, heads, d, N] -> [B, N, heads*d]
        return self.proj(x)


class _DualBlock(nn.Module):
    """``cpe1 -> x + attn(norm1(x)) -> cpe2 -> x + mlp(norm2(x))``; NCHW in and out.
    Subclasses define ``_attn`` on the normed NHWC map."""

    def __init__(self, dim: int, attn: nn.Module, *, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.cpe1 = ConvPosEnc(dim)
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.cpe2 = ConvPosEnc(dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe1(x).permute(0, 2, 3, 1)
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = self.cpe2(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class SpatialBlock(_DualBlock):
    """Multi-head self-attention inside non-overlapping windows (the map is zero-padded
    bottom/right to whole windows and cropped back)."""

    def __init__(self, dim: int, num_heads: int, window_size: int | tuple[int, int] = 7, **kwargs: Any) -> None:
        super().__init__(dim, Attention(dim, num_heads, qkv_bias=True), **kwargs)
        self.window_size: tuple[int, int] = to_2tuple(window_size)  # type: ignore[assignment]

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        wh, ww = self.window_size
        pad_h, pad_w = (wh - h % wh) % wh, (ww - w % ww) % ww
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        windows = self.attn(window_partition(x, self.window_size).reshape(-1, wh * ww, c))
        return window_reverse(windows.reshape(-1, wh, ww, c), self.window_size, hp, wp)[:, :h, :w, :]


class ChannelBlock(_DualBlock):
    """Channel group attention over all positions of the map."""

    def __init__(self, dim: int, num_heads: int, v2: bool = False, **kwargs: Any) -> None:
        super().__init__(dim, ChannelAttention(dim, num_heads, v2=v2), **kwargs)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        return self.attn(x.reshape(b, h * w, c)).reshape(b, h, w, c)


class NamedDualBlock(nn.Module):
    """A spatial + channel pair under named attributes (the Florence-2 checkpoint layout)."""

    def __init__(self, spatial_block: nn.Module, channel_block: nn.Module) -> None:
        super().__init__()
        self.spatial_block = spatial_block
        self.channel_block = channel_block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_block(self.spatial_block(x))


class Downsample(nn.Module):
    """Channel LayerNorm then a stride-2 conv (kernel 2, or 3 with padding 1)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 2) -> None:
        super().__init__()
        self.norm = _Norm2d(in_chs)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=2, padding=kernel_size // 2 if kernel_size % 2 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


class DaVitStage(nn.Module):
    """Optional downsampling, then ``depth`` (spatial, channel) block pairs."""

    def __init__(self, in_chs: int, out_chs: int, *, depth: int, num_heads: int, downsample: bool,
                 down_kernel_size: int = 2, window_size: int = 7, channel_attn_v2: bool = False,
                 named_blocks: bool = False, drop_path: Sequence[float] = (), **block_kwargs: Any) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = Downsample(in_chs, out_chs, down_kernel_size) if downsample else nn.Identity()
        rates = list(drop_path) or [0.0] * depth
        pairs: list[nn.Module] = []
        for i in range(depth):
            spatial = SpatialBlock(out_chs, num_heads, window_size, drop_path=rates[i], **block_kwargs)
            channel = ChannelBlock(out_chs, num_heads, v2=channel_attn_v2, drop_path=rates[i], **block_kwargs)
            pairs.append(NamedDualBlock(spatial, channel) if named_blocks else nn.Sequential(spatial, channel))
        self.blocks = nn.Sequential(*pairs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Stem(nn.Module):
    """7x7 stride-4 conv and channel LayerNorm."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 7, stride=4, padding=3)
        self.norm = _Norm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class DaVit(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """DaViT backbone (NCHW maps between blocks) with a pool -> LayerNorm -> fc head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        global_pool: str = "avg",
        depths: Sequence[int] = (1, 1, 3, 1),
        embed_dims: Sequence[int] = (96, 192, 384, 768),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        down_kernel_size: int = 2,
        channel_attn_v2: bool = False,
        named_blocks: bool = False,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        n = len(depths)
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.stem = Stem(in_chans, embed_dims[0])
        rates = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            DaVitStage(embed_dims[max(i - 1, 0)], embed_dims[i], depth=depths[i], num_heads=num_heads[i],
                       downsample=i > 0, down_kernel_size=down_kernel_size, window_size=window_size,
                       channel_attn_v2=channel_attn_v2, named_blocks=named_blocks, drop_path=rates[i],
                       mlp_ratio=mlp_ratio)
            for i in range(n)])
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f"stages.{i}") for i in range(n)]
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head = NormMlpClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate,
                                          norm_layer=_Norm2d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    # FeatureMixin hooks: the stage outputs are the levels (the only norm is in the head)
    _stem_level = False


# --- variants ----------------------------------------------------------------------------------
def _dims(c: int) -> dict[str, Any]:
    return dict(embed_dims=(c, 2 * c, 4 * c, 8 * c), num_heads=(c // 32, c // 16, c // 8, c // 4))


_tiny = Variant(DaVit, depths=(1, 1, 3, 1), **_dims(96))
_small = _tiny.but(depths=(1, 1, 9, 1))
_florence = dict(window_size=12, down_kernel_size=3, channel_attn_v2=True, named_blocks=True)

VARIANTS: dict[str, Variant] = {
    "davit_tiny": _tiny,
    "davit_small": _small,
    "davit_base": _small.but(**_dims(128)),
    "davit_large": _small.but(**_dims(192)),
    "davit_huge": _small.but(**_dims(256)),
    "davit_giant": _small.but(depths=(1, 1, 12, 3), **_dims(384)),
    "davit_base_fl": _small.but(**_dims(128), **_florence),
    "davit_huge_fl": _small.but(**_dims(256), **_florence),
}

register_family("davit", VARIANTS)
