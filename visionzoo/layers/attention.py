"""Multi-head self-attention blocks for transformer backbones.

Every attention here can run through ``F.scaled_dot_product_attention`` (fused kernels) or the
explicit ``softmax(q k^T / sqrt(d)) v`` path; the choice is read from
``visionzoo.layers.config.use_fused_attn()`` when the layer is built and kept in ``fused_attn``
(flip it on an instance to compare the two).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import LayerType, get_act_layer
from .config import use_fused_attn
from .mlp import Mlp

__all__ = ["Attention", "AttentionPoolLatent", "DiffAttention", "scaled_dot_product_attention",
           "diff_lambda_init", "differential_attention"]


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool,
                                 attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0,
                                 scale: float | None = None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` over ``[B, heads, N, d]`` tensors, fused or explicit."""
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def _norm_or_identity(norm_layer: Callable[..., nn.Module] | None, enabled: bool, dim: int) -> nn.Module:
    if not enabled:
        return nn.Identity()
    if norm_layer is None:
        raise ValueError("a norm_layer is required when qk_norm/scale_norm is enabled")
    return norm_layer(dim)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection.

    Args:
        dim: token width; ``num_heads`` must divide it.
        qkv_bias: bias on the qkv projection.
        qk_norm: normalise queries and keys per head (``q_norm``/``k_norm``, ViT-22B).
        scale_norm: normalise the attention output before ``proj`` (``norm``, Magneto/BEiT-3 sub-LN).
        proj_bias: bias on the output projection.
        norm_layer: norm used by ``qk_norm``/``scale_norm``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_norm: bool = False,
                 scale_norm: bool = False, proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = _norm_or_identity(norm_layer, qk_norm, self.head_dim)
        self.k_norm = _norm_or_identity(norm_layer, qk_norm, self.head_dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = _norm_or_identity(norm_layer, scale_norm, dim)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(x, attn_mask)

    def attend(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention itself on ``[B, N, C]`` tokens; subclasses that reshape their input call this
        (TorchScript cannot compile ``super().forward()``)."""
        b, n, c = x.shape
        # [B, N, 3*C] -> 3 x [B, heads, N, head_dim]
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=attn_mask,
                                         dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        x = x.transpose(1, 2).reshape(b, n, c)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))


def differential_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lam: torch.Tensor, scale: float,
                           fused: bool, dropout_p: float = 0.0) -> torch.Tensor:
    """``(softmax(q1 k1^T) - lam softmax(q2 k2^T)) v`` per head.

    q, k: ``[B, 2*heads, N, d]`` (halves of head ``h`` at ``2h`` and ``2h+1``); v: ``[B, heads, N, dv]``.
    Returns ``[B, heads, N, dv]`` (before the per-head norm).
    """
    b, _, n, _ = q.shape
    heads = v.shape[1]
    if fused:
        # (A1 - lam A2) v = A1 v - lam A2 v: one fused call with v shared by both halves
        x = F.scaled_dot_product_attention(q, k, v.repeat_interleave(2, dim=1), dropout_p=dropout_p, scale=scale)
        x = x.reshape(b, heads, 2, n, -1)
        return x[:, :, 0] - lam * x[:, :, 1]
    attn = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    attn = attn.reshape(b, heads, 2, n, -1)
    attn = attn[:, :, 0] - lam * attn[:, :, 1]
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def diff_lambda_init(depth: int) -> float:
    """The Differential Transformer's depth-dependent ``lambda_init = 0.8 - 0.6 exp(-0.3 l)``."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class DiffAttention(nn.Module):
    """Differential attention (Ye et al., 2024, https://arxiv.org/abs/2410.05258).

    Each head splits its query/key into two halves and attends with the difference of the two
    softmax maps, ``(softmax(q1 k1^T) - lambda softmax(q2 k2^T)) v``, which cancels attention noise
    common to both. ``lambda = exp(lq1.lk1) - exp(lq2.lk2) + lambda_init``; the head output is
    RMS-normalised (``sub_norm``) and scaled by ``1 - lambda_init``.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_norm: bool = False,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_layer: Callable[..., nn.Module] | None = None, depth: int = 0,
                 sub_norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % (2 * num_heads):
            raise ValueError(f"dim {dim} is not divisible by 2 * num_heads ({2 * num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads // 2  # width of each of the two query/key halves
        self.scale = self.head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.lambda_init = diff_lambda_init(depth)
        self.lambda_q1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(self.head_dim))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = _norm_or_identity(norm_layer, qk_norm, self.head_dim)
        self.k_norm = _norm_or_identity(norm_layer, qk_norm, self.head_dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sub_norm = nn.RMSNorm(2 * self.head_dim, eps=sub_norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(p, mean=0.0, std=0.1)

    def lambda_full(self) -> torch.Tensor:
        l1 = torch.exp(torch.sum(self.lambda_q1 * self.lambda_k1, dim=-1).float())
        l2 = torch.exp(torch.sum(self.lambda_q2 * self.lambda_k2, dim=-1).float())
        return l1 - l2 + self.lambda_init

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attn_mask is not None:
            raise NotImplementedError("DiffAttention does not support attention masks")
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        q = q.reshape(b, n, 2 * self.num_heads, self.head_dim).transpose(1, 2)
        k = k.reshape(b, n, 2 * self.num_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, n, self.num_heads, 2 * self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        x = differential_attention(q, k, v, self.lambda_full().to(q.dtype), self.scale, self.fused_attn,
                                   dropout_p=self.attn_drop.p if self.training else 0.0)
        x = self.sub_norm(x) * (1.0 - self.lambda_init)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class AttentionPoolLatent(nn.Module):
    """Multi-head attention pooling with learned latent queries (the SigLIP "MAP" head).

    ``latent_len`` learned queries attend over the tokens, followed by a residual MLP
    (``x + mlp(norm(x))``); ``pool_type='token'`` returns the first query's output, ``'avg'`` the
    mean over queries, ``''`` all of them.
    """

    def __init__(self, in_features: int, out_features: int | None = None, embed_dim: int | None = None,
                 num_heads: int = 8, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_norm: bool = False,
                 latent_len: int = 1, pool_type: str = "token",
                 norm_layer: Callable[..., nn.Module] | None = None, act_layer: LayerType = nn.GELU,
                 drop: float = 0.0) -> None:
        super().__init__()
        if pool_type not in ("token", "avg", ""):
            raise ValueError(f"pool_type must be 'token', 'avg' or '', got {pool_type!r}")
        embed_dim = embed_dim or in_features
        out_features = out_features or in_features
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        norm_layer = norm_layer or nn.LayerNorm
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.pool_type = pool_type
        self.fused_attn = use_fused_attn()
        self.latent_len = latent_len
        self.latent = nn.Parameter(torch.empty(1, latent_len, embed_dim))
        self.q = nn.Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.kv = nn.Linear(embed_dim, embed_dim * 2, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(drop)
        self.norm = norm_layer(out_features)
        self.mlp = Mlp(embed_dim, int(embed_dim * mlp_ratio), act_layer=get_act_layer(act_layer))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.latent, std=self.latent.shape[-1] ** -0.5)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``attn_mask`` (optional, e.g. ``[B, 1, 1, N]`` bool, True = attend) hides padding tokens."""
        b, n, c = x.shape
        q = self.q(self.latent.expand(b, -1, -1))
        q = q.reshape(b, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=attn_mask, scale=self.scale)
        x = x.transpose(1, 2).reshape(b, self.latent_len, c)
        x = self.proj_drop(self.proj(x))
        x = x + self.mlp(self.norm(x))
        if self.pool_type == "token":
            return x[:, 0]
        if self.pool_type == "avg":
            return x.mean(1)
        return x
