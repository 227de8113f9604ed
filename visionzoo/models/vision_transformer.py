"""Vision Transformer (ViT) and the plain-ViT variants that share its layout.

Papers:
    * ViT: Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words", https://arxiv.org/abs/2010.11929
    * AugReg: Steiner et al., 2022, "How to train your ViT?", https://arxiv.org/abs/2106.10270
    * DeiT III / LayerScale: Touvron et al., 2022, https://arxiv.org/abs/2204.07118
    * Parallel blocks: Touvron et al., 2022, "Three things everyone should know about ViTs",
      https://arxiv.org/abs/2203.09795
    * ViT-22B (parallel scaling block, qk-norm): Dehghani et al., 2023, https://arxiv.org/abs/2302.05442
    * Registers: Darcet et al., 2024, "Vision Transformers Need Registers", https://arxiv.org/abs/2309.16588
    * CLIP: Radford et al., 2021, https://arxiv.org/abs/2103.00020
    * SigLIP (MAP head): Zhai et al., 2023, https://arxiv.org/abs/2303.15343
    * FlexiViT: Beyer et al., 2023, https://arxiv.org/abs/2212.08013
    * DINOv2: Oquab et al., 2023, https://arxiv.org/abs/2304.07193
    * Differential attention: Ye et al., 2024, https://arxiv.org/abs/2410.05258
    * BEiT-3: Wang et al., 2022, https://arxiv.org/abs/2208.10442; AIMv2: Fini et al., 2024,
      https://arxiv.org/abs/2411.14402

One configurable :class:`VisionTransformer` covers every architecture here: a variant is an
entry of ``VARIANTS`` (keyword arguments of the constructor), registered in a loop.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.activations import LayerType, get_act_layer
from ..layers.attention import (Attention, AttentionPoolLatent, DiffAttention, diff_lambda_init, differential_attention,
                                scaled_dot_product_attention)
from ..layers.config import use_fused_attn
from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.layer_scale import LayerScale
from ..layers.mlp import GluMlp, Mlp, SwiGLU
from ..layers.norm import get_norm_layer
from ..layers.patch_embed import PatchEmbed, resample_patch_embed
from ..layers.pool import pool_tokens
from ..layers.pos_embed import build_sincos2d_pos_embed, resample_abs_pos_embed
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family

__all__ = ["VisionTransformer", "Block", "ResPostBlock", "ParallelScalingBlock", "DiffParallelScalingBlock",
           "ParallelThingsBlock", "PatchDropout", "VARIANTS", "resolve_norm_layer", "resolve_mlp_layer",
           "resolve_block"]

NormFactory = Callable[[int], nn.Module]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def resolve_norm_layer(norm_layer: LayerType, eps: float = 1e-6) -> NormFactory:
    """``'layernorm'`` (default), ``'layernorm_nobias'``, ``'rmsnorm'`` with ``eps``, or a factory ``f(dim)``."""
    return get_norm_layer(norm_layer or "layernorm", eps=eps)


def resolve_mlp_layer(mlp_layer: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``'mlp'``, ``'swiglu'`` (separate gate/value fcs), ``'swiglu_packed'`` (one fc, gate first) or a class."""
    if not isinstance(mlp_layer, str):
        return mlp_layer
    table: dict[str, Callable[..., nn.Module]] = {
        "mlp": Mlp,
        "swiglu": SwiGLU,
        "swiglu_packed": partial(GluMlp, gate_last=False),
        "glu": GluMlp,
    }
    if mlp_layer not in table:
        raise ValueError(f"unknown mlp_layer {mlp_layer!r}; known: {', '.join(table)}")
    return table[mlp_layer]


def _make_mlp(mlp_layer: Callable[..., nn.Module], dim: int, hidden: int, act_layer: LayerType,
              norm_layer: NormFactory | None, bias: bool, drop: float) -> nn.Module:
    return mlp_layer(dim, hidden, act_layer=act_layer, norm_layer=norm_layer, bias=bias, drop=drop)


class PatchDropout(nn.Module):
    """Randomly keep ``1 - prob`` of the patch tokens while training (Liu et al., 2022, "PatchDropout").

    Prefix (class/register) tokens are always kept; in eval mode this is the identity.
    """

    def __init__(self, prob: float = 0.0, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"patch dropout prob must be in [0, 1), got {prob}")
        self.prob = prob
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        prefix, x = x[:, :self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
        b, n = x.shape[:2]
        keep = max(1, int(n * (1.0 - self.prob)))
        idx = torch.argsort(torch.randn(b, n, device=x.device), dim=-1)[:, :keep]
        x = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return torch.cat([prefix, x], dim=1)


# --------------------------------------------------------------------------------------------
# blocks (all take the same keyword arguments)
# --------------------------------------------------------------------------------------------

class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``.

    ``attn_type='diff'`` swaps in differential attention; ``scale_attn_norm``/``scale_mlp_norm``
    add the extra sub-LN inside attention/MLP (BEiT-3).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_norm: bool = False, proj_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 init_values: float | None = None, drop_path: float = 0.0, act_layer: LayerType = nn.GELU,
                 norm_layer: NormFactory = nn.LayerNorm, mlp_layer: Callable[..., nn.Module] = Mlp,
                 scale_attn_norm: bool = False, scale_mlp_norm: bool = False, attn_type: str = "standard",
                 layer_idx: int = 0) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        if attn_type == "diff":
            if scale_attn_norm:
                raise ValueError("scale_attn_norm is not supported with differential attention")
            self.attn: nn.Module = DiffAttention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm,
                                                 proj_bias=proj_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                                                 norm_layer=norm_layer, depth=layer_idx)
        elif attn_type == "standard":
            self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, scale_norm=scale_attn_norm,
                                  proj_bias=proj_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                                  norm_layer=norm_layer)
        else:
            raise ValueError(f"unknown attn_type {attn_type!r}; known: 'standard', 'diff'")
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = _make_mlp(mlp_layer, dim, int(dim * mlp_ratio), act_layer,
                             norm_layer if scale_mlp_norm else None, proj_bias, proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class ResPostBlock(nn.Module):
    """Residual post-norm block (Swin V2 "res-post-norm"): ``x + norm1(attn(x))``, ``x + norm2(mlp(x))``.

    Normalising the branch output instead of its input keeps activations bounded in deep models.
    ``init_values`` (if given) initialises the norm weights, so branches start small.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_norm: bool = False, proj_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 init_values: float | None = None, drop_path: float = 0.0, act_layer: LayerType = nn.GELU,
                 norm_layer: NormFactory = nn.LayerNorm, mlp_layer: Callable[..., nn.Module] = Mlp,
                 layer_idx: int = 0) -> None:
        super().__init__()
        self.init_values = init_values
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias,
                              attn_drop=attn_drop, proj_drop=proj_drop, norm_layer=norm_layer)
        self.norm1 = norm_layer(dim)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = _make_mlp(mlp_layer, dim, int(dim * mlp_ratio), act_layer, None, proj_bias, proj_drop)
        self.norm2 = norm_layer(dim)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init_values is not None:
            for norm in (self.norm1, self.norm2):
                if getattr(norm, "weight", None) is not None:
                    nn.init.constant_(norm.weight, self.init_values)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.norm1(self.attn(x, attn_mask=attn_mask)))
        return x + self.drop_path2(self.norm2(self.mlp(x)))


class ParallelScalingBlock(nn.Module):
    """ViT-22B parallel block: attention and MLP read the same normed input through one fused
    ``in_proj`` (MLP hidden then q, k, v), and their outputs are summed: ``x + ls(attn + mlp)``.

    Without ``qkv_bias`` the fused projection has no bias but the MLP part keeps one
    (``mlp_bias``), as in ViT-22B.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_norm: bool = False, proj_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 init_values: float | None = None, drop_path: float = 0.0, act_layer: LayerType = nn.GELU,
                 norm_layer: NormFactory = nn.LayerNorm, mlp_layer: Callable[..., nn.Module] | None = None,
                 layer_idx: int = 0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.mlp_hidden_dim = int(mlp_ratio * dim)
        self.attn_drop_p = attn_drop
        if qkv_bias:
            self.register_parameter("mlp_bias", None)
        else:
            self.mlp_bias = nn.Parameter(torch.zeros(self.mlp_hidden_dim))
        self.in_norm = norm_layer(dim)
        self.in_proj = nn.Linear(dim, 3 * dim + self.mlp_hidden_dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_out_proj = nn.Linear(dim, dim, bias=proj_bias)
        self.mlp_drop = nn.Dropout(proj_drop)
        self.mlp_act = get_act_layer(act_layer)()
        self.mlp_out_proj = nn.Linear(self.mlp_hidden_dim, dim, bias=proj_bias)
        self.ls = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        y = self.in_proj(self.in_norm(x))
        x_mlp, q, k, v = torch.split(y, [self.mlp_hidden_dim, c, c, c], dim=-1)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        q = q.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        return q, k, v, x_mlp

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v, x_mlp = self._project(x)
        q, k = self.q_norm(q), self.k_norm(k)
        x_attn = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=attn_mask,
                                              dropout_p=self.attn_drop_p if self.training else 0.0, scale=self.scale)
        x_attn = self.attn_out_proj(x_attn.transpose(1, 2).reshape(b, n, c))
        x_mlp = self.mlp_out_proj(self.mlp_drop(self.mlp_act(x_mlp)))
        return x + self.drop_path(self.ls(x_attn + x_mlp))


class DiffParallelScalingBlock(nn.Module):
    """Parallel scaling block with differential attention; attention and MLP outputs are
    concatenated and mixed by one ``out_proj``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_norm: bool = False, proj_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 init_values: float | None = None, drop_path: float = 0.0, act_layer: LayerType = nn.GELU,
                 norm_layer: NormFactory = nn.LayerNorm, mlp_layer: Callable[..., nn.Module] | None = None,
                 layer_idx: int = 0) -> None:
        super().__init__()
        if dim % (2 * num_heads):
            raise ValueError(f"dim {dim} is not divisible by 2 * num_heads ({2 * num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads // 2
        self.scale = self.head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        self.mlp_hidden_dim = int(mlp_ratio * dim)
        self.attn_drop_p = attn_drop
        self.lambda_init = diff_lambda_init(layer_idx)
        self.lambda_q1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(self.head_dim))
        if qkv_bias:
            self.register_parameter("mlp_bias", None)
        else:
            self.mlp_bias = nn.Parameter(torch.zeros(self.mlp_hidden_dim))
        self.in_norm = norm_layer(dim)
        self.in_proj = nn.Linear(dim, 3 * dim + self.mlp_hidden_dim, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.sub_norm = nn.RMSNorm(2 * self.head_dim, eps=1e-5)
        self.mlp_drop = nn.Dropout(proj_drop)
        self.mlp_act = get_act_layer(act_layer)()
        self.out_proj = nn.Linear(dim + self.mlp_hidden_dim, dim, bias=proj_bias)
        self.ls = LayerScale(dim, init_values) if init_values is not None else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
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
            raise NotImplementedError("differential attention does not support attention masks")
        b, n, c = x.shape
        y = self.in_proj(self.in_norm(x))
        x_mlp, q, k, v = torch.split(y, [self.mlp_hidden_dim, c, c, c], dim=-1)
        if self.mlp_bias is not None:
            x_mlp = x_mlp + self.mlp_bias
        q = q.reshape(b, n, 2 * self.num_heads, self.head_dim).transpose(1, 2)
        k = k.reshape(b, n, 2 * self.num_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, n, self.num_heads, 2 * self.head_dim).transpose(1, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        x_attn = differential_attention(q, k, v, self.lambda_full().to(q.dtype), self.scale, self.fused_attn,
                                        dropout_p=self.attn_drop_p if self.training else 0.0)
        x_attn = (self.sub_norm(x_attn) * (1.0 - self.lambda_init)).transpose(1, 2).reshape(b, n, c)
        x_mlp = self.mlp_drop(self.mlp_act(x_mlp))
        y = self.out_proj(torch.cat([x_attn, x_mlp], dim=-1))
        return x + self.drop_path(self.ls(y))


class ParallelThingsBlock(nn.Module):
    """``num_parallel`` attention branches summed, then ``num_parallel`` MLP branches summed
    (Touvron et al., 2022): a wider, shallower network with the same parameter count."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_norm: bool = False, proj_bias: bool = True, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 init_values: float | None = None, drop_path: float = 0.0, act_layer: LayerType = nn.GELU,
                 norm_layer: NormFactory = nn.LayerNorm, mlp_layer: Callable[..., nn.Module] = Mlp,
                 num_parallel: int = 2, layer_idx: int = 0) -> None:
        super().__init__()
        self.attns = nn.ModuleList()
        self.ffns = nn.ModuleList()
        for _ in range(num_parallel):
            self.attns.append(nn.Sequential(OrderedDict([
                ("norm", norm_layer(dim)),
                ("attn", Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, proj_bias=proj_bias,
                                   attn_drop=attn_drop, proj_drop=proj_drop, norm_layer=norm_layer)),
                ("ls", LayerScale(dim, init_values) if init_values else nn.Identity()),
                ("drop_path", DropPath(drop_path) if drop_path > 0.0 else nn.Identity()),
            ])))
            self.ffns.append(nn.Sequential(OrderedDict([
                ("norm", norm_layer(dim)),
                ("mlp", _make_mlp(mlp_layer, dim, int(dim * mlp_ratio), act_layer, None, proj_bias, proj_drop)),
                ("ls", LayerScale(dim, init_values) if init_values else nn.Identity()),
                ("drop_path", DropPath(drop_path) if drop_path > 0.0 else nn.Identity()),
            ])))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        # branch sums as explicit loops (TorchScript has no generator expressions)
        acc: torch.Tensor | None = None
        for b in self.attns:
            y = b.drop_path(b.ls(b.attn(b.norm(x), attn_mask=attn_mask)))
            acc = y if acc is None else acc + y
        assert acc is not None
        x = x + acc
        acc = None
        for f in self.ffns:
            y = f(x)
            acc = y if acc is None else acc + y
        assert acc is not None
        return x + acc


_BLOCKS: dict[str, type[nn.Module]] = {
    "block": Block,
    "res_post": ResPostBlock,
    "parallel_scaling": ParallelScalingBlock,
    "diff_parallel_scaling": DiffParallelScalingBlock,
    "parallel_things": ParallelThingsBlock,
}


def resolve_block(block_fn: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A block class by name (``'block'``, ``'res_post'``, ``'parallel_scaling'``,
    ``'diff_parallel_scaling'``, ``'parallel_things'``) or the class itself."""
    if not isinstance(block_fn, str):
        return block_fn
    if block_fn not in _BLOCKS:
        raise ValueError(f"unknown block_fn {block_fn!r}; known: {', '.join(_BLOCKS)}")
    return _BLOCKS[block_fn]


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------

_POOLS = ("token", "avg", "max", "avgmax", "map", "")


class VisionTransformer(FeatureMixin, nn.Module):
    """Vision Transformer: patch embedding, prefix tokens, position embedding, a stack of
    transformer blocks, final norm and a pooled linear head.

    Args:
        img_size: input size the position embedding is made for.
        patch_size: patch size (feature reduction).
        global_pool: ``'token'`` (first prefix token), ``'avg'``/``'max'``/``'avgmax'`` over patch
            tokens, ``'map'`` (attention pooling head), ``''`` (no pooling).
        embed_dim, depth, num_heads, mlp_ratio: width, number of blocks, heads, MLP expansion.
        qkv_bias, qk_norm, proj_bias: attention/MLP projection options.
        init_values: LayerScale init (``None`` disables LayerScale).
        class_token: prepend a class token; ``reg_tokens``: number of register tokens.
        pos_embed: ``'learn'``, ``'sincos'`` (fixed 2-D sin-cos, not trained) or ``'none'``.
        no_embed_class: the position embedding covers patch tokens only (prefix tokens get none).
        pre_norm: norm after embedding (CLIP ``ln_pre``); ``final_norm``: norm after the blocks.
        fc_norm: norm after pooling instead of before (``None``: for ``'avg'``/``'max'``/``'avgmax'``).
        patch_bias: bias of the patch-embedding conv; ``embed_norm``: norm inside the patch embed.
        dynamic_img_size: accept any input size, resampling the position embedding on the fly.
        dynamic_img_pad: pad inputs not divisible by the patch size.
        norm_layer, norm_eps: ``'layernorm'``/``'layernorm_nobias'``/``'rmsnorm'`` or a factory.
        act_layer: MLP activation (``'gelu'``, ``'gelu_tanh'``, ``'quick_gelu'``, ...).
        block_fn: block type by name or class; ``mlp_layer``: ``'mlp'``/``'swiglu'``/``'swiglu_packed'``.
        attn_type: ``'standard'`` or ``'diff'`` (differential attention) for ``Block``.
        scale_attn_norm, scale_mlp_norm: extra sub-LNs inside attention/MLP (BEiT-3).
        num_parallel: branches per block for ``'parallel_things'``.
        attn_pool_num_heads, attn_pool_mlp_ratio: MAP head options (default: the blocks').
        pool_include_prefix: ``avg``/``max``/``map`` pooling also sees the prefix tokens.
        weight_init: ``''`` (truncated normal) or ``'skip'`` (leave PyTorch defaults).
    """
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        init_values: float | None = None,
        class_token: bool = True,
        reg_tokens: int = 0,
        pos_embed: str = "learn",
        no_embed_class: bool = False,
        pre_norm: bool = False,
        final_norm: bool = True,
        fc_norm: bool | None = None,
        patch_bias: bool = True,
        embed_norm: bool = False,
        dynamic_img_size: bool = False,
        dynamic_img_pad: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        patch_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: LayerType = "layernorm",
        norm_eps: float = 1e-6,
        act_layer: LayerType = "gelu",
        block_fn: str | Callable[..., nn.Module] = "block",
        mlp_layer: str | Callable[..., nn.Module] = "mlp",
        attn_type: str = "standard",
        scale_attn_norm: bool = False,
        scale_mlp_norm: bool = False,
        num_parallel: int = 2,
        attn_pool_num_heads: int | None = None,
        attn_pool_mlp_ratio: float | None = None,
        pool_include_prefix: bool = False,
        weight_init: str = "",
    ) -> None:
        super().__init__()
        if global_pool not in _POOLS:
            raise ValueError(f"unknown global_pool {global_pool!r}; choose one of {_POOLS}")
        if pos_embed not in ("learn", "sincos", "none", ""):
            raise ValueError(f"pos_embed must be 'learn', 'sincos' or 'none', got {pos_embed!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if weight_init not in ("", "skip"):
            raise ValueError(f"weight_init must be '' or 'skip', got {weight_init!r}")
        norm = resolve_norm_layer(norm_layer, norm_eps)
        # pooled token averages/maxima are normed after pooling (fc_norm), a class token or MAP before
        use_fc_norm = global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm
        block_cls = resolve_block(block_fn)

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.num_reg_tokens = reg_tokens
        self.has_class_token = class_token
        self.no_embed_class = no_embed_class
        self.dynamic_img_size = dynamic_img_size
        self.pool_include_prefix = pool_include_prefix
        self.pos_embed_type = pos_embed or "none"
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            norm_layer=norm if embed_norm else None, output_fmt="NHWC" if dynamic_img_size else "NLC",
            bias=patch_bias, strict_img_size=not dynamic_img_size, dynamic_img_pad=dynamic_img_pad)
        num_patches = self.patch_embed.num_patches
        reduction = self.patch_embed.patch_size[0]

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        embed_len = num_patches if no_embed_class else num_patches + self.num_prefix_tokens
        if self.pos_embed_type == "none":
            self.pos_embed = None
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, embed_dim),
                                          requires_grad=self.pos_embed_type == "learn")
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.patch_drop = (PatchDropout(patch_drop_rate, self.num_prefix_tokens) if patch_drop_rate > 0
                           else nn.Identity())
        self.norm_pre = norm(embed_dim) if pre_norm else nn.Identity()

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        block_kwargs: dict[str, Any] = dict(
            dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm,
            proj_bias=proj_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, init_values=init_values,
            act_layer=act_layer, norm_layer=norm, mlp_layer=resolve_mlp_layer(mlp_layer))
        if block_cls is Block:
            block_kwargs.update(scale_attn_norm=scale_attn_norm, scale_mlp_norm=scale_mlp_norm, attn_type=attn_type)
        elif scale_attn_norm or scale_mlp_norm or attn_type != "standard":
            raise ValueError("scale_attn_norm/scale_mlp_norm/attn_type apply to block_fn='block' only")
        if block_cls is ParallelThingsBlock:
            block_kwargs["num_parallel"] = num_parallel
        self.blocks = nn.Sequential(*[block_cls(drop_path=dpr[i], layer_idx=i, **block_kwargs) for i in range(depth)])
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f"blocks.{i}") for i in range(depth)]
        self.default_out_indices = tuple(range(max(depth - 3, 0), depth))

        self.norm = norm(embed_dim) if final_norm and not use_fc_norm else nn.Identity()
        self.fc_norm = norm(embed_dim) if final_norm and use_fc_norm else nn.Identity()
        if global_pool == "map":
            self.attn_pool: AttentionPoolLatent | None = AttentionPoolLatent(
                embed_dim, num_heads=attn_pool_num_heads or num_heads, mlp_ratio=attn_pool_mlp_ratio or mlp_ratio,
                norm_layer=norm, act_layer=act_layer)
        else:
            self.attn_pool = None
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        if weight_init != "skip":
            self.init_weights()

    # ---- init / bookkeeping ---------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(0.02) linears and position embedding, near-zero prefix tokens."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.pos_embed is not None:
            if self.pos_embed_type == "sincos":
                self.init_non_persistent_buffers()
            else:
                trunc_normal_(self.pos_embed, std=0.02)
        for tok in (self.cls_token, self.reg_token):
            if tok is not None:
                nn.init.normal_(tok, std=1e-6)

    @torch.no_grad()
    def init_non_persistent_buffers(self) -> None:
        """Recompute the fixed sin-cos table (``pos_embed='sincos'``); a no-op otherwise."""
        if self.pos_embed is None or self.pos_embed_type != "sincos" or self.pos_embed.is_meta:
            return
        grid = self.patch_embed.grid_size
        emb = build_sincos2d_pos_embed(grid, self.embed_dim, device=self.pos_embed.device)
        if not self.no_embed_class and self.num_prefix_tokens:
            emb = torch.cat([emb.new_zeros(self.num_prefix_tokens, self.embed_dim), emb], dim=0)
        self.pos_embed.copy_(emb.unsqueeze(0).to(self.pos_embed.dtype))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "reg_token", "dist_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head (``num_classes=0``: identity); optionally change the pooling.

        Switching away from ``'map'`` drops the attention-pool head; switching to ``'map'`` needs
        a model built with it.
        """
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ValueError(f"unknown global_pool {global_pool!r}; choose one of {_POOLS}")
            if global_pool == "map" and self.attn_pool is None:
                raise ValueError("global_pool='map' needs a model created with global_pool='map'")
            if global_pool == "token" and not self.has_class_token:
                raise ValueError("global_pool='token' needs a class token")
            if global_pool != "map":
                self.attn_pool = None
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    # ---- forward --------------------------------------------------------------------------
    def _prefix_tokens(self, b: int) -> list[torch.Tensor]:
        toks = []
        if self.cls_token is not None:
            toks.append(self.cls_token.expand(b, -1, -1))
        if self.reg_token is not None:
            toks.append(self.reg_token.expand(b, -1, -1))
        return toks

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten the patch grid, add position embeddings and prepend prefix tokens."""
        if self.dynamic_img_size:
            b, h, w, c = x.shape
            x = x.reshape(b, h * w, c)
            pos = None
            if self.pos_embed is not None:
                pos = resample_abs_pos_embed(self.pos_embed, (h, w), old_size=self.patch_embed.grid_size,
                                             num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens)
        else:
            pos = self.pos_embed
        prefix = self._prefix_tokens(x.shape[0])
        if self.no_embed_class:
            if pos is not None:
                x = x + pos
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
        else:
            if prefix:
                x = torch.cat(prefix + [x], dim=1)
            if pos is not None:
                x = x + pos
        return self.pos_drop(x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    def _run_block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(blk, x)
        return blk(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        # written out rather than through ``_run_block``: TorchScript has no module-typed parameters
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        """Reduce ``[B, N, C]`` tokens to ``[B, C]`` by ``pool_type`` (default: ``global_pool``)."""
        pool_type = self.global_pool if pool_type is None else pool_type
        if pool_type == "map" and self.attn_pool is not None:
            return self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens:])
        return pool_tokens(x, pool_type, self.num_prefix_tokens, self.pool_include_prefix)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x)
        x = self.fc_norm(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- intermediates / features ---------------------------------------------------------
    # ---- features: FeatureMixin hooks (the trunk is the blocks, one level per block) ------------
    _stem_level = False
    _output_fmts = ("NCHW", "NLC", "tokens")  # 'tokens': raw sequences, prefix tokens included
    _final_after_stop_early = True

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self._embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self._run_block(stage, x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        """Block output -> patch tokens (``norm``: through the final norm), as a grid for NCHW."""
        if norm:
            x = self.norm(x)
        if output_fmt == "tokens":
            return x
        x = x[:, self.num_prefix_tokens:]
        if output_fmt == "NLC":
            return x
        grid_h, grid_w = self.patch_embed.dynamic_feat_size(in_size)
        return x.reshape(x.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous()

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    def _prune_head(self) -> None:
        self.fc_norm = nn.Identity()
        self.attn_pool = None
        if self.global_pool == "map":
            self.global_pool = ""
        self.reset_classifier(0, "")

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs of the blocks at ``indices`` (an int ``n``: the last ``n``), see
        :meth:`FeatureMixin.forward_intermediates`; ``output_fmt`` ``'NCHW'`` (patch tokens as a
        grid) or ``'NLC'``; ``return_prefix_tokens`` pairs each map with its prefix tokens."""
        if not return_prefix_tokens:
            return super().forward_intermediates(x, indices, norm, stop_early, output_fmt, intermediates_only)
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        in_size = (x.shape[-2], x.shape[-1])
        out = super().forward_intermediates(x, indices, norm, stop_early, "tokens", intermediates_only)
        seqs = out if intermediates_only else out[1]
        pairs = [(self._level_output(t, False, False, output_fmt, in_size), t[:, :self.num_prefix_tokens])
                 for t in seqs]
        return pairs if intermediates_only else (out[0], pairs)  # type: ignore[return-value]

    # ---- checkpoint adaptation ------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                             interpolation: str = "bicubic", antialias: bool = True) -> dict[str, torch.Tensor]:
        """Fit a checkpoint to ``model``: resample the position embedding to the model's grid
        (prefix-token rows kept) and the patch-embedding kernel to its patch size.

        A checkpoint with an attention-pool head loaded into a model built with another
        ``global_pool`` loses its ``attn_pool.*`` weights; if the model then norms after pooling
        (``fc_norm``) the checkpoint's pre-pool ``norm.*`` is dropped too and ``fc_norm`` starts
        as the identity affine. The loader reports what was dropped and initialised.
        """
        out: dict[str, torch.Tensor] = {}
        own = model.state_dict()
        if getattr(model, "attn_pool", "absent") is None and any(k.startswith("attn_pool.") for k in state_dict):
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("attn_pool.")}
            if (not any(k.startswith("norm.") for k in own) and any(k.startswith("fc_norm.") for k in own)
                    and not any(k.startswith("fc_norm.") for k in state_dict)):
                state_dict = {k: v for k, v in state_dict.items() if not k.startswith("norm.")}
                for k, v in own.items():
                    if k.startswith("fc_norm."):
                        state_dict[k] = torch.ones_like(v) if k.endswith("weight") else torch.zeros_like(v)
        num_prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        for k, v in state_dict.items():
            if k == "pos_embed" and k in own and v.shape != own[k].shape and v.ndim == 3:
                grid = model.patch_embed.grid_size
                v = resample_abs_pos_embed(v, grid, num_prefix_tokens=num_prefix, interpolation=interpolation,
                                           antialias=antialias)
            elif k == "patch_embed.proj.weight" and k in own and v.shape[-2:] != own[k].shape[-2:]:
                v = resample_patch_embed(v, own[k].shape[-2:], interpolation=interpolation, antialias=antialias)
            out[k] = v
        return out


# --------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------

def _size(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> dict[str, Any]:
    return dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=mlp_ratio)


TINY = _size(192, 12, 3)
SMALL = _size(384, 12, 6)
MEDIUM = _size(512, 12, 8)
BETWIXT = _size(640, 12, 10)
BASE = _size(768, 12, 12)
LARGE = _size(1024, 24, 16)
HUGE = _size(1280, 32, 16)
GIANT = _size(1408, 40, 16, 4.3637)  # ViT-g/14 (Zhai et al., 2022): MLP 6144
GIGANTIC = _size(1664, 48, 16, 4.9231)  # ViT-G/14: MLP 8192
SO400M = _size(1152, 27, 16, 3.7362)  # shape-optimised (Alabdulmohsin et al., 2023): MLP 4304
GIANTOPT = _size(1536, 40, 16)

_CLIP = dict(pre_norm=True, patch_bias=False, norm_eps=1e-5)
_CLIP_QUICK = dict(_CLIP, act_layer="quick_gelu")
_SIGLIP = dict(class_token=False, global_pool="map")
_SIGLIP_GAP = dict(class_token=False, global_pool="avg", fc_norm=False)
# architectures added for SigLIP 2 keep big_vision's tanh-approximated GELU
_SIGLIP2 = dict(_SIGLIP, act_layer="gelu_tanh")
_SIGLIP2_GAP = dict(_SIGLIP_GAP, act_layer="gelu_tanh")
_GAP = dict(class_token=False, global_pool="avg", fc_norm=False)
_REG_GAP = dict(class_token=False, no_embed_class=True, global_pool="avg", init_values=1e-5)
_DINOV2 = dict(img_size=518, patch_size=14, init_values=1e-5)
_DINOV2_REG = dict(_DINOV2, reg_tokens=4, no_embed_class=True)
_TIPS = dict(img_size=448, patch_size=14, init_values=1e-5, reg_tokens=1, no_embed_class=True)
_RADIO = dict(img_size=512, patch_size=16, no_embed_class=True, final_norm=False)
_XP = dict(block_fn="parallel_scaling", qkv_bias=False, qk_norm=True, no_embed_class=True, pre_norm=True,
           patch_bias=False, norm_layer="rmsnorm")
_AIMV2 = dict(patch_size=14, class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False,
              proj_bias=False, norm_layer="rmsnorm", norm_eps=1e-5, embed_norm=True, mlp_layer="swiglu")
_BEIT3 = dict(scale_attn_norm=True, scale_mlp_norm=True, global_pool="avg", norm_eps=1e-5)


def _v(*parts: Mapping[str, Any], **kw: Any) -> Variant:
    """A ViT variant from size presets (``SMALL``, ...) and overrides, later ones winning."""
    out: dict[str, Any] = {}
    for p in parts:
        out.update(p)
    out.update(kw)
    return Variant(VisionTransformer, **out)


VARIANTS: dict[str, Variant] = {
    # -- original ViT / AugReg -----------------------------------------------------------------
    "vit_tiny_patch16_224": _v(TINY, patch_size=16),
    "vit_tiny_patch16_384": _v(TINY, patch_size=16, img_size=384),
    "vit_small_patch32_224": _v(SMALL, patch_size=32),
    "vit_small_patch32_384": _v(SMALL, patch_size=32, img_size=384),
    "vit_small_patch16_224": _v(SMALL, patch_size=16),
    "vit_small_patch16_384": _v(SMALL, patch_size=16, img_size=384),
    "vit_small_patch8_224": _v(SMALL, patch_size=8),
    "vit_base_patch32_224": _v(BASE, patch_size=32),
    "vit_base_patch32_384": _v(BASE, patch_size=32, img_size=384),
    "vit_base_patch16_224": _v(BASE, patch_size=16),
    "vit_base_patch16_384": _v(BASE, patch_size=16, img_size=384),
    "vit_base_patch8_224": _v(BASE, patch_size=8),
    "vit_large_patch32_224": _v(LARGE, patch_size=32),
    "vit_large_patch32_384": _v(LARGE, patch_size=32, img_size=384),
    "vit_large_patch16_224": _v(LARGE, patch_size=16),
    "vit_large_patch16_384": _v(LARGE, patch_size=16, img_size=384),
    "vit_large_patch14_224": _v(LARGE, patch_size=14),
    "vit_huge_patch14_224": _v(HUGE, patch_size=14),
    "vit_giant_patch14_224": _v(GIANT, patch_size=14),
    "vit_gigantic_patch14_224": _v(GIGANTIC, patch_size=14),
    "vit_base_patch16_224_miil": _v(BASE, patch_size=16, qkv_bias=False),
    # -- no class token, global average pool -------------------------------------------------
    "vit_base_patch16_gap_224": _v(BASE, _GAP, patch_size=16, num_heads=16),
    "vit_huge_patch14_gap_224": _v(HUGE, _GAP, patch_size=14),
    "vit_huge_patch16_gap_448": _v(HUGE, _GAP, patch_size=16, img_size=448),
    "vit_giant_patch16_gap_224": _v(GIANT, _GAP, patch_size=16),
    "vit_medium_patch16_gap_240": _v(MEDIUM, _GAP, patch_size=16, img_size=240, qkv_bias=False, init_values=1e-6),
    "vit_medium_patch16_gap_256": _v(MEDIUM, _GAP, patch_size=16, img_size=256, qkv_bias=False, init_values=1e-6),
    "vit_medium_patch16_gap_384": _v(MEDIUM, _GAP, patch_size=16, img_size=384, qkv_bias=False, init_values=1e-6),
    "vit_betwixt_patch16_gap_256": _v(BETWIXT, _GAP, patch_size=16, img_size=256, qkv_bias=False, init_values=1e-6),
    # -- register tokens + GAP (+ fc_norm) ---------------------------------------------------
    "vit_base_patch16_reg4_gap_256": _v(BASE, _REG_GAP, patch_size=16, img_size=256, reg_tokens=4, init_values=None),
    "vit_wee_patch16_reg1_gap_256": _v(_size(256, 14, 4, 5.0), _REG_GAP, img_size=256, reg_tokens=1),
    "vit_pwee_patch16_reg1_gap_256": _v(_size(256, 16, 4, 5.0), _REG_GAP, img_size=256, reg_tokens=1,
                                        block_fn="parallel_scaling"),
    "vit_dwee_patch16_reg1_gap_256": _v(_size(256, 14, 4, 5.0), _REG_GAP, img_size=256, reg_tokens=1, attn_type="diff"),
    "vit_dpwee_patch16_reg1_gap_256": _v(_size(256, 16, 4, 5.0), _REG_GAP, img_size=256, reg_tokens=1,
                                         block_fn="diff_parallel_scaling"),
    "vit_little_patch16_reg1_gap_256": _v(_size(320, 14, 5, 5.6), _REG_GAP, img_size=256, reg_tokens=1),
    "vit_little_patch16_reg4_gap_256": _v(_size(320, 14, 5, 5.6), _REG_GAP, img_size=256, reg_tokens=4),
    "vit_dlittle_patch16_reg1_gap_256": _v(_size(320, 14, 5, 5.6), _REG_GAP, img_size=256, reg_tokens=1,
                                           attn_type="diff"),
    "vit_medium_patch16_reg1_gap_256": _v(MEDIUM, _REG_GAP, img_size=256, reg_tokens=1),
    "vit_medium_patch16_reg4_gap_256": _v(MEDIUM, _REG_GAP, img_size=256, reg_tokens=4),
    "vit_mediumd_patch16_reg4_gap_256": _v(MEDIUM, _REG_GAP, depth=20, img_size=256, reg_tokens=4),
    "vit_mediumd_patch16_reg4_gap_384": _v(MEDIUM, _REG_GAP, depth=20, img_size=384, reg_tokens=4),
    "vit_betwixt_patch16_reg1_gap_256": _v(BETWIXT, _REG_GAP, img_size=256, reg_tokens=1),
    "vit_betwixt_patch16_reg4_gap_256": _v(BETWIXT, _REG_GAP, img_size=256, reg_tokens=4),
    "vit_betwixt_patch16_reg4_gap_384": _v(BETWIXT, _REG_GAP, img_size=384, reg_tokens=4),
    "vit_so150m_patch16_reg4_gap_256": _v(_size(896, 18, 14, 2.572), img_size=256, class_token=False, reg_tokens=4,
                                          global_pool="avg", fc_norm=False),
    "vit_so150m_patch16_reg4_gap_384": _v(_size(896, 18, 14, 2.572), img_size=384, class_token=False, reg_tokens=4,
                                          global_pool="avg", fc_norm=False),
    "vit_so150m_patch16_reg4_map_256": _v(_size(896, 18, 14, 2.572), img_size=256, class_token=False, reg_tokens=4,
                                          global_pool="map"),
    "vit_so150m2_patch16_reg1_gap_256": _v(_size(832, 21, 13, 2.616), img_size=256, class_token=False, reg_tokens=1,
                                           global_pool="avg", qkv_bias=False, init_values=1e-5),
    "vit_so150m2_patch16_reg1_gap_384": _v(_size(832, 21, 13, 2.616), img_size=384, class_token=False, reg_tokens=1,
                                           global_pool="avg", qkv_bias=False, init_values=1e-5),
    "vit_so150m2_patch16_reg1_gap_448": _v(_size(832, 21, 13, 2.616), img_size=448, class_token=False, reg_tokens=1,
                                           global_pool="avg", qkv_bias=False, init_values=1e-5),
    # -- misc block types --------------------------------------------------------------------
    "vit_base_patch16_rpn_224": _v(BASE, patch_size=16, block_fn="res_post", class_token=False, global_pool="avg",
                                   qkv_bias=False, init_values=1e-5),
    "vit_small_patch16_36x1_224": _v(SMALL, depth=36, init_values=1e-5),
    "vit_small_patch16_18x2_224": _v(SMALL, depth=18, init_values=1e-5, block_fn="parallel_things"),
    "vit_base_patch16_18x2_224": _v(BASE, depth=18, init_values=1e-5, block_fn="parallel_things"),
    "vit_base_patch16_xp_224": _v(BASE, _XP),
    "vit_large_patch14_xp_224": _v(LARGE, _XP, patch_size=14),
    "vit_huge_patch14_xp_224": _v(HUGE, _XP, patch_size=14),
    "vit_base_patch16_plus_240": _v(_size(896, 12, 14), img_size=240, init_values=1e-5),
    "vit_base_patch32_plus_256": _v(_size(896, 12, 14), patch_size=32, img_size=256, init_values=1e-5),
    # -- FlexiViT ----------------------------------------------------------------------------
    "flexivit_small": _v(SMALL, img_size=240, no_embed_class=True),
    "flexivit_base": _v(BASE, img_size=240, no_embed_class=True),
    "flexivit_large": _v(LARGE, img_size=240, no_embed_class=True),
    # -- CLIP image towers -------------------------------------------------------------------
    "vit_xsmall_patch16_clip_224": _v(_size(256, 10, 4), _CLIP),
    "vit_medium_patch32_clip_224": _v(MEDIUM, _CLIP, patch_size=32),
    "vit_medium_patch16_clip_224": _v(MEDIUM, _CLIP),
    "vit_betwixt_patch32_clip_224": _v(BETWIXT, _CLIP, patch_size=32),
    "vit_base_patch32_clip_224": _v(BASE, _CLIP, patch_size=32),
    "vit_base_patch32_clip_256": _v(BASE, _CLIP, patch_size=32, img_size=256),
    "vit_base_patch32_clip_384": _v(BASE, _CLIP, patch_size=32, img_size=384),
    "vit_base_patch32_clip_448": _v(BASE, _CLIP, patch_size=32, img_size=448),
    "vit_base_patch16_clip_224": _v(BASE, _CLIP),
    "vit_base_patch16_clip_384": _v(BASE, _CLIP, img_size=384),
    "vit_base_patch16_plus_clip_240": _v(_size(896, 12, 14), _CLIP, img_size=240),
    "vit_large_patch14_clip_224": _v(LARGE, _CLIP, patch_size=14),
    "vit_large_patch14_clip_336": _v(LARGE, _CLIP, patch_size=14, img_size=336),
    "vit_huge_patch14_clip_224": _v(HUGE, _CLIP, patch_size=14),
    "vit_huge_patch14_clip_336": _v(HUGE, _CLIP, patch_size=14, img_size=336),
    "vit_huge_patch14_clip_378": _v(HUGE, _CLIP, patch_size=14, img_size=378),
    "vit_giant_patch14_clip_224": _v(GIANT, _CLIP, patch_size=14),
    "vit_gigantic_patch14_clip_224": _v(GIGANTIC, _CLIP, patch_size=14),
    "vit_gigantic_patch14_clip_378": _v(GIGANTIC, _CLIP, patch_size=14, img_size=378),
    "vit_base_patch32_clip_quickgelu_224": _v(BASE, _CLIP_QUICK, patch_size=32),
    "vit_base_patch16_clip_quickgelu_224": _v(BASE, _CLIP_QUICK),
    "vit_large_patch14_clip_quickgelu_224": _v(LARGE, _CLIP_QUICK, patch_size=14),
    "vit_large_patch14_clip_quickgelu_336": _v(LARGE, _CLIP_QUICK, patch_size=14, img_size=336),
    "vit_huge_patch14_clip_quickgelu_224": _v(HUGE, _CLIP_QUICK, patch_size=14),
    "vit_huge_patch14_clip_quickgelu_378": _v(HUGE, _CLIP_QUICK, patch_size=14, img_size=378),
    "vit_gigantic_patch14_clip_quickgelu_224": _v(GIGANTIC, _CLIP_QUICK, patch_size=14),
    # -- SigLIP (MAP head) / SigLIP GAP ------------------------------------------------------
    "vit_base_patch16_siglip_224": _v(BASE, _SIGLIP),
    "vit_base_patch16_siglip_256": _v(BASE, _SIGLIP, img_size=256),
    "vit_base_patch16_siglip_384": _v(BASE, _SIGLIP, img_size=384),
    "vit_base_patch16_siglip_512": _v(BASE, _SIGLIP, img_size=512),
    "vit_base_patch32_siglip_256": _v(BASE, _SIGLIP2, patch_size=32, img_size=256),
    "vit_large_patch16_siglip_256": _v(LARGE, _SIGLIP, img_size=256),
    "vit_large_patch16_siglip_384": _v(LARGE, _SIGLIP, img_size=384),
    "vit_large_patch16_siglip_512": _v(LARGE, _SIGLIP2, img_size=512),
    "vit_so400m_patch14_siglip_224": _v(SO400M, _SIGLIP, patch_size=14),
    "vit_so400m_patch14_siglip_378": _v(SO400M, _SIGLIP, patch_size=14, img_size=378),
    "vit_so400m_patch14_siglip_384": _v(SO400M, _SIGLIP, patch_size=14, img_size=384),
    "vit_so400m_patch16_siglip_256": _v(SO400M, _SIGLIP, img_size=256),
    "vit_so400m_patch16_siglip_384": _v(SO400M, _SIGLIP2, img_size=384),
    "vit_so400m_patch16_siglip_512": _v(SO400M, _SIGLIP2, img_size=512),
    "vit_giantopt_patch16_siglip_256": _v(GIANTOPT, _SIGLIP2, img_size=256),
    "vit_giantopt_patch16_siglip_384": _v(GIANTOPT, _SIGLIP2, img_size=384),
    "vit_base_patch16_siglip_gap_224": _v(BASE, _SIGLIP_GAP),
    "vit_base_patch16_siglip_gap_256": _v(BASE, _SIGLIP_GAP, img_size=256),
    "vit_base_patch16_siglip_gap_384": _v(BASE, _SIGLIP_GAP, img_size=384),
    "vit_base_patch16_siglip_gap_512": _v(BASE, _SIGLIP_GAP, img_size=512),
    "vit_base_patch32_siglip_gap_256": _v(BASE, _SIGLIP2_GAP, patch_size=32, img_size=256),
    "vit_large_patch16_siglip_gap_256": _v(LARGE, _SIGLIP_GAP, img_size=256),
    "vit_large_patch16_siglip_gap_384": _v(LARGE, _SIGLIP_GAP, img_size=384),
    "vit_large_patch16_siglip_gap_512": _v(LARGE, _SIGLIP2_GAP, img_size=512),
    "vit_so400m_patch14_siglip_gap_224": _v(SO400M, _SIGLIP_GAP, patch_size=14),
    "vit_so400m_patch14_siglip_gap_378": _v(SO400M, _SIGLIP_GAP, patch_size=14, img_size=378),
    "vit_so400m_patch14_siglip_gap_384": _v(SO400M, _SIGLIP_GAP, patch_size=14, img_size=384),
    "vit_so400m_patch14_siglip_gap_448": _v(SO400M, _SIGLIP_GAP, patch_size=14, img_size=448),
    "vit_so400m_patch14_siglip_gap_896": _v(SO400M, _SIGLIP_GAP, patch_size=14, img_size=896),
    "vit_so400m_patch16_siglip_gap_256": _v(SO400M, _SIGLIP_GAP, img_size=256),
    "vit_so400m_patch16_siglip_gap_384": _v(SO400M, _SIGLIP2_GAP, img_size=384),
    "vit_so400m_patch16_siglip_gap_512": _v(SO400M, _SIGLIP2_GAP, img_size=512),
    "vit_giantopt_patch16_siglip_gap_256": _v(GIANTOPT, _SIGLIP2_GAP, img_size=256),
    "vit_giantopt_patch16_siglip_gap_384": _v(GIANTOPT, _SIGLIP2_GAP, img_size=384),
    # -- DINOv2 / TIPSv2 / RADIO / InternViT -------------------------------------------------
    "vit_small_patch14_dinov2": _v(SMALL, _DINOV2),
    "vit_base_patch14_dinov2": _v(BASE, _DINOV2),
    "vit_large_patch14_dinov2": _v(LARGE, _DINOV2),
    "vit_giant_patch14_dinov2": _v(_size(1536, 40, 24, 5.3334), _DINOV2, mlp_layer="swiglu_packed", act_layer="silu"),
    "vit_small_patch14_reg4_dinov2": _v(SMALL, _DINOV2_REG),
    "vit_base_patch14_reg4_dinov2": _v(BASE, _DINOV2_REG),
    "vit_large_patch14_reg4_dinov2": _v(LARGE, _DINOV2_REG),
    "vit_giant_patch14_reg4_dinov2": _v(_size(1536, 40, 24, 5.3334), _DINOV2_REG, mlp_layer="swiglu_packed",
                                        act_layer="silu"),
    "vit_base_patch14_reg1_tipsv2": _v(BASE, _TIPS),
    "vit_large_patch14_reg1_tipsv2": _v(LARGE, _TIPS),
    "vit_so400m_patch14_reg1_tipsv2": _v(SO400M, _TIPS),
    "vit_giant_patch14_reg1_tipsv2": _v(_size(1536, 40, 24, 5.3334), _TIPS, mlp_layer="swiglu_packed",
                                        act_layer="silu"),
    "vit_base_patch16_radio_v3": _v(BASE, _RADIO, reg_tokens=7, init_values=1e-5),
    "vit_large_patch16_radio_v3": _v(LARGE, _RADIO, reg_tokens=7, init_values=1e-5),
    "vit_huge_patch16_radio_v3": _v(HUGE, _RADIO, reg_tokens=7),
    "vit_giant_patch16_radio_v3": _v(GIANTOPT, _RADIO, num_heads=24, reg_tokens=7),
    "vit_huge_patch16_radio_v4": _v(HUGE, _RADIO, reg_tokens=9),
    "vit_so400m_patch16_radio_v4": _v(SO400M, _RADIO, reg_tokens=9),
    "vit_intern300m_patch14_448": _v(LARGE, patch_size=14, img_size=448, init_values=0.1, final_norm=False),
    # -- EVA-01 large, BEiT-3 (plain-ViT layouts) ------------------------------------------------
    "eva_large_patch14_196": _v(LARGE, patch_size=14, img_size=196, global_pool="avg"),
    "eva_large_patch14_336": _v(LARGE, patch_size=14, img_size=336, global_pool="avg"),
    "beit3_base_patch16_224": _v(BASE, _BEIT3),
    "beit3_large_patch16_224": _v(LARGE, _BEIT3),
    "beit3_giant_patch14_224": _v(GIANT, _BEIT3, patch_size=14),
    "beit3_giant_patch14_336": _v(GIANT, _BEIT3, patch_size=14, img_size=336),
    # -- AIMv2 (no class token, RMSNorm, SwiGLU) -----------------------------------------------
    "aimv2_large_patch14_224": _v(_size(1024, 24, 8, 2.75), _AIMV2),
    "aimv2_large_patch14_336": _v(_size(1024, 24, 8, 2.75), _AIMV2, img_size=336),
    "aimv2_large_patch14_448": _v(_size(1024, 24, 8, 2.75), _AIMV2, img_size=448),
    "aimv2_huge_patch14_224": _v(_size(1536, 24, 12, 2.6667), _AIMV2),
    "aimv2_huge_patch14_336": _v(_size(1536, 24, 12, 2.6667), _AIMV2, img_size=336),
    "aimv2_huge_patch14_448": _v(_size(1536, 24, 12, 2.6667), _AIMV2, img_size=448),
    "aimv2_1b_patch14_224": _v(_size(2048, 24, 16, 2.75), _AIMV2),
    "aimv2_1b_patch14_336": _v(_size(2048, 24, 16, 2.75), _AIMV2, img_size=336),
    "aimv2_1b_patch14_448": _v(_size(2048, 24, 16, 2.75), _AIMV2, img_size=448),
    "aimv2_3b_patch14_224": _v(_size(3072, 24, 24, 2.6667), _AIMV2),
    "aimv2_3b_patch14_336": _v(_size(3072, 24, 24, 2.6667), _AIMV2, img_size=336),
    "aimv2_3b_patch14_448": _v(_size(3072, 24, 24, 2.6667), _AIMV2, img_size=448),
    # -- tiny test models ----------------------------------------------------------------------
    "test_vit": _v(_size(64, 6, 2, 3.0), img_size=160),
    "test_vit2": _v(_size(64, 8, 2, 3.0), img_size=160, class_token=False, reg_tokens=1, global_pool="avg",
                    init_values=1e-5),
    "test_vit3": _v(_size(96, 9, 3, 2.0), img_size=160, class_token=False, reg_tokens=1, global_pool="map",
                    init_values=1e-5, pool_include_prefix=True),
    "test_vit4": _v(_size(96, 9, 3, 3.0), img_size=160, class_token=False, reg_tokens=1, global_pool="avg",
                    init_values=1e-5, norm_layer="rmsnorm"),
}


register_family("vision_transformer", VARIANTS)
