"""XCiT: Cross-Covariance Image Transformers.

Paper: El-Nouby et al., 2021, "XCiT: Cross-Covariance Image Transformers",
https://arxiv.org/abs/2106.09681

Self-attention over tokens costs ``N^2``; XCiT attends over *channels* instead:

    * cross-covariance attention (XCA): per head, queries and keys are transposed to
      ``[d, N]``, L2-normalised along the tokens, and the ``d x d`` attention map
      ``softmax(q_hat k_hat^T * tau)`` (learned per-head temperature ``tau``) mixes the value
      channels. Cost is linear in the number of tokens, so any image size works;
    * local patch interaction (LPI): two depthwise 3x3 convs (GELU + BatchNorm between them)
      give the tokens the spatial communication XCA lacks;
    * a convolutional patch embedding (3x3 stride-2 conv + BatchNorm, GELU between, ``log2(p)``
      times) and a sine/cosine (Fourier) position encoding of the grid projected by a 1x1 conv;
    * as in CaiT, the class token joins late, in a few class-attention blocks (LayerScale).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath
from ..layers.mlp import Mlp
from ..layers.weight_init import init_weights_vit_style, trunc_normal_
from .base import Variant, register_family
from .cait import Cait, ClassAttn, LayerScaleBlock

__all__ = ["XCiT", "XCA", "LPI", "XCABlock", "ClassAttentionBlock", "ConvPatchEmbed",
           "PositionalEncodingFourier", "VARIANTS"]


class PositionalEncodingFourier(nn.Module):
    """Sine/cosine encoding of normalised ``(y, x)`` grid coordinates (``hidden_dim`` frequencies
    each), projected to ``dim`` channels by a 1x1 conv. Computed for any grid size."""

    def __init__(self, hidden_dim: int = 32, dim: int = 768, temperature: float = 10000.0) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.scale = 2 * math.pi
        self.temperature = temperature
        self.hidden_dim = hidden_dim
        self.dim = dim
        self.eps = 1e-6

    def forward(self, b: int, h: int, w: int) -> torch.Tensor:
        """``[b, dim, h, w]`` encoding of an ``h x w`` grid."""
        device, dtype = self.token_projection.weight.device, self.token_projection.weight.dtype
        # coordinates 1..n, normalised so the last row/column sits at 2*pi
        y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        y = y / (h + self.eps) * self.scale
        x = x / (w + self.eps) * self.scale
        i = torch.arange(self.hidden_dim, dtype=torch.int64, device=device)
        freq = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.hidden_dim)
        py, px = y[:, None] / freq, x[:, None] / freq                              # [h, D], [w, D]
        # interleave sin of even and cos of odd frequencies: [s0, c1, s2, c3, ...]
        py = torch.stack([py[:, 0::2].sin(), py[:, 1::2].cos()], dim=2).flatten(1)
        px = torch.stack([px[:, 0::2].sin(), px[:, 1::2].cos()], dim=2).flatten(1)
        pos = torch.cat([py[:, None, :].expand(h, w, -1), px[None, :, :].expand(h, w, -1)], dim=2)
        pos = pos.permute(2, 0, 1).unsqueeze(0).to(dtype)                          # [1, 2D, h, w]
        return self.token_projection(pos).expand(b, -1, -1, -1)


def _conv3x3_bn(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out_chs))


class ConvPatchEmbed(nn.Module):
    """``log2(patch_size)`` stride-2 3x3 conv+BN layers (GELU between) -> ``[B, N, C]`` tokens."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        if patch_size not in (8, 16):
            raise ValueError(f"XCiT's conv patch embedding supports patch_size 8 or 16, got {patch_size}")
        self.patch_size = (patch_size, patch_size)
        n = int(math.log2(patch_size))
        chs = [in_chans] + [embed_dim // 2 ** (n - 1 - i) for i in range(n)]
        layers: list[nn.Module] = []
        for i in range(n):
            if i:
                layers.append(act_layer())
            layers.append(_conv3x3_bn(chs[i], chs[i + 1]))
        self.proj = nn.Sequential(*layers)

    def feat_ratio(self) -> tuple[int, int]:
        return self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` image -> ``[B, C', Hp, Wp]`` map."""
        return self.proj(x)


class LPI(nn.Module):
    """Local patch interaction: depthwise 3x3 conv -> GELU -> BatchNorm -> depthwise 3x3 conv on the
    token grid."""

    def __init__(self, dim: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = act_layer()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x = x.permute(0, 3, 1, 2)
        return self.conv2(self.bn(self.act(self.conv1(x)))).permute(0, 2, 3, 1)


class XCA(nn.Module):
    """Cross-covariance attention: a ``d x d`` attention map per head over channels, from
    L2-normalised (along tokens) queries and keys, scaled by a learned per-head temperature."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # [B, N, 3C] -> 3 x [B, heads, d, N]
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1).unbind(0)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)  # [B, heads, d, d]
        attn = self.attn_drop(attn)
        x = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class XCABlock(nn.Module):
    """XCA, LPI and MLP sub-blocks, each pre-normed, LayerScaled (``gamma1/3/2``) and residual.

    Runs on the ``[B, H, W, C]`` token grid, so LPI knows the grid without being told."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, eta: float = 1.0) -> None:
        super().__init__()
        self.eta = eta
        self.gamma1 = nn.Parameter(torch.empty(dim))
        self.gamma3 = nn.Parameter(torch.empty(dim))
        self.gamma2 = nn.Parameter(torch.empty(dim))
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = XCA(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.local_mp = LPI(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for g in (self.gamma1, self.gamma2, self.gamma3):
            nn.init.constant_(g, self.eta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` token grid in and out (norms, XCA and MLP read it as a sequence)."""
        b, h, w, c = x.shape
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x).reshape(b, h * w, c)).reshape(b, h, w, c))
        x = x + self.drop_path(self.gamma3 * self.local_mp(self.norm3(x)))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class ClassAttentionBlock(LayerScaleBlock):
    """XCiT's class-attention block over ``[cls, patches]``: CaiT's LayerScale block with
    :class:`ClassAttn`, its LayerScale vectors named ``gamma1``/``gamma2`` as in XCiT's weights.

    As in the published XCiT weights, the patch tokens are carried through the block too: the
    attention branch adds their own normed values (``x + gamma1 * norm1(x)``), then the whole
    sequence is normed (``tokens_norm``; else only the class token) and the patch tokens are
    added to themselves. The class token gets attention then MLP, as in CaiT.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, eta: float = 1.0,
                 tokens_norm: bool = False) -> None:
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, proj_drop, attn_drop, drop_path, init_values=eta,
                         attn_block=ClassAttn)
        # same tensors, XCiT's names (the block's only own parameters, so the order is kept)
        self.gamma1 = self._parameters.pop("gamma_1")
        self.gamma2 = self._parameters.pop("gamma_2")
        self.tokens_norm = tokens_norm

    def reset_parameters(self) -> None:
        for gamma in self._parameters.values():  # the two LayerScale vectors, whatever their names
            nn.init.constant_(gamma, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.norm1(x)
        x = x + self.drop_path(self.gamma1 * torch.cat([self.attn(u), u[:, 1:]], dim=1))
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)
        x_cls = self.gamma2 * self.mlp(x[:, :1])
        return x + self.drop_path(torch.cat([x_cls, x[:, 1:]], dim=1))


class XCiT(Cait):
    """XCiT: conv patch embedding + Fourier position encoding, ``depth`` XCA blocks over patch
    tokens, then ``cls_attn_layers`` class-attention blocks and the final norm. The head reads
    the class token (``'token'``) or the mean of the patch tokens (``'avg'``).

    Attention over channels makes the trunk size-agnostic: any input whose sides are multiples of
    ``patch_size`` runs (``img_size`` only fixes the default configuration).

    The model, head, feature hooks and checkpoint filter are CaiT's; what differs is the
    embedding, the blocks and the class-attention stage.
    """

    def __init__(self, *, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "token", embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, cls_attn_layers: int = 2, use_pos_embed: bool = True,
                 eta: float = 1.0, tokens_norm: bool = False) -> None:
        nn.Module.__init__(self)  # CaiT's layout differs from the start: its constructor is not reused
        if global_pool not in ("", "token", "avg"):
            raise ValueError(f"global_pool must be '', 'token' or 'avg', got {global_pool!r}")
        self.num_classes, self.global_pool, self.grad_checkpointing = num_classes, global_pool, False
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.patch_embed = ConvPatchEmbed(patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        self.pos_embed: Optional[PositionalEncodingFourier] = (
            PositionalEncodingFourier(dim=embed_dim) if use_pos_embed else None)
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.blocks = nn.Sequential(*[
            XCABlock(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate, drop_path_rate, eta)
            for _ in range(depth)])  # the same drop-path rate in every block, as published
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.default_out_indices = tuple(range(max(depth - 3, 0), depth))
        self.cls_attn_blocks = nn.ModuleList([
            ClassAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate,
                                eta=eta, tokens_norm=tokens_norm)
            for _ in range(cls_attn_layers)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(0.02) linears and class token, zero biases."""
        self.apply(init_weights_vit_style)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> ``[B, H, W, C]`` embedded token grid (the trunk's layout)."""
        x = self.patch_embed(x)
        b, c, h, w = x.shape
        if self.pos_embed is not None:
            x = x + self.pos_embed(b, h, w)
        return self.pos_drop(x.permute(0, 2, 3, 1))

    def _class_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Class-attention stage and final norm: patch grid -> ``[cls, patches]`` tokens."""
        x = x.flatten(1, 2)
        cls_token = self.cls_token
        if cls_token is None:  # pruned for feature extraction
            return self.norm(x)
        x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.cls_attn_blocks:
            x = blk(x)
        return self.norm(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if norm:
            x = self.norm(x)
        if output_fmt == "NLC":
            return x.flatten(1, 2)
        return x.permute(0, 3, 1, 2).contiguous()

    def _prune_head(self) -> None:
        self.cls_token = None
        self.cls_attn_blocks = nn.ModuleList()
        self.reset_classifier(0, "")


def _x(embed_dim: int, depth: int, num_heads: int, eta: float, tokens_norm: bool = True) -> Variant:
    return Variant(XCiT, embed_dim=embed_dim, depth=depth, num_heads=num_heads, eta=eta, tokens_norm=tokens_norm)


_SIZES = {
    "nano_12": _x(128, 12, 4, 1.0, tokens_norm=False),
    "tiny_12": _x(192, 12, 4, 1.0),
    "tiny_24": _x(192, 24, 4, 1e-5),
    "small_12": _x(384, 12, 8, 1.0),
    "small_24": _x(384, 24, 8, 1e-5),
    "medium_24": _x(512, 24, 8, 1e-5),
    "large_24": _x(768, 24, 16, 1e-5),
}
VARIANTS: dict[str, Variant] = {
    f"xcit_{size}_p{p}_{img}": v.but(patch_size=p, img_size=img)
    for size, v in _SIZES.items() for p in (8, 16) for img in (224, 384)
}
register_family("xcit", VARIANTS)
