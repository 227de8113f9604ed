"""EVA / EVA-02 and the rotary-position ViTs that share their layout (DINOv3, Perception Encoder,
RoPE-ViT, Sapiens2, LingBot).

Papers:
    * EVA: Fang et al., 2023, "EVA: Exploring the Limits of Masked Visual Representation Learning
      at Scale", https://arxiv.org/abs/2211.07636
    * EVA-02: Fang et al., 2024, "EVA-02: A Visual Representation for Neon Genesis",
      https://arxiv.org/abs/2303.11331 (SwiGLU MLP with sub-LN, 2-D rotary embeddings)
    * EVA-CLIP: Sun et al., 2023, https://arxiv.org/abs/2303.15389
    * RoPE-ViT: Heo et al., 2024, "Rotary Position Embedding for Vision Transformer",
      https://arxiv.org/abs/2403.13298 (axial and mixed RoPE)
    * DINOv3: Simeoni et al., 2025, https://arxiv.org/abs/2508.10104
    * Perception Encoder: Bolya et al., 2025, https://arxiv.org/abs/2504.13181

One :class:`Eva` transformer covers all of them: patch embedding, optional class/register tokens
and absolute position embedding, a stack of pre-norm blocks whose attention rotates queries and
keys of the patch tokens by a 2-D RoPE (``layers/rope.py``), then a final norm and a pooled head
(class token, average, or an attention-pooling head).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType
from ..layers.attention import AttentionPoolLatent, scaled_dot_product_attention
from ..layers.config import use_fused_attn
from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.mlp import GluMlp, Mlp, SwiGLU
from ..layers.patch_dropout import PatchDropoutWithIndices
from ..layers.patch_embed import PatchEmbed, resample_patch_embed
from ..layers.pool import pool_tokens
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.rope import AxialRope, MixedRope, apply_rope_after_prefix, rope_gather
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family

__all__ = ["Eva", "EvaAttention", "EvaBlock", "VARIANTS"]

NormFactory = Callable[[int], nn.Module]


def _norm_factory(norm_layer: LayerType, eps: float) -> NormFactory:
    if not isinstance(norm_layer, str):
        return norm_layer
    name = norm_layer.lower()
    if name == "layernorm":
        return partial(nn.LayerNorm, eps=eps)
    if name == "rmsnorm":
        return partial(nn.RMSNorm, eps=eps)
    raise ValueError(f"unknown norm_layer {norm_layer!r}; known: 'layernorm', 'rmsnorm'")


class EvaAttention(nn.Module):
    """Multi-head self-attention with RoPE on the patch tokens.

    ``qkv_mode`` picks the projection layout of the published weights:

    * ``'fused'``: one bias-free ``qkv`` linear; with ``qkv_bias`` learned ``q_bias``/``v_bias``
      (the key bias is zero: it would only shift every logit of a query by the same amount);
    * ``'fused_bias'``: one ``qkv`` linear with an ordinary bias;
    * ``'separate'``: ``q_proj``/``k_proj``/``v_proj`` (``k_bias`` adds a bias to the key).

    ``num_kv_heads`` (< ``num_heads``, separate projections only) makes it grouped-query
    attention. ``qk_norm`` normalises queries and keys per head; ``scale_norm`` normalises the attention
    output before ``proj`` (EVA-02 CLIP's sub-LN). RoPE (``rope`` in ``forward``) skips the first
    ``num_prefix_tokens`` tokens.
    """

    def __init__(self, dim: int, num_heads: int, qkv_mode: str = "fused", qkv_bias: bool = True,
                 k_bias: bool = False, qk_norm: bool = False, scale_norm: bool = False, num_prefix_tokens: int = 1,
                 rope_half: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 norm_layer: NormFactory = nn.LayerNorm, num_kv_heads: Optional[int] = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads or (num_kv_heads != num_heads and qkv_mode != "separate"):
            raise ValueError(f"num_kv_heads {num_kv_heads} must divide num_heads {num_heads} (qkv_mode='separate')")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        self.num_prefix_tokens = num_prefix_tokens
        self.rope_half = rope_half
        self.fused_attn = use_fused_attn()
        self.qkv_mode = qkv_mode
        self.register_parameter("q_bias", None)
        self.register_parameter("v_bias", None)
        self.qkv: Optional[nn.Linear] = None
        self.q_proj: Optional[nn.Linear] = None
        self.k_proj: Optional[nn.Linear] = None
        self.v_proj: Optional[nn.Linear] = None
        if qkv_mode == "fused":
            if qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.v_bias = nn.Parameter(torch.zeros(dim))
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        elif qkv_mode == "fused_bias":
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        elif qkv_mode == "separate":
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, kv_dim, bias=k_bias)
            self.v_proj = nn.Linear(dim, kv_dim, bias=qkv_bias)
        else:
            raise ValueError(f"qkv_mode must be 'fused', 'fused_bias' or 'separate', got {qkv_mode!r}")
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = norm_layer(dim) if scale_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        if self.qkv is not None:
            if self.q_bias is not None and self.v_bias is not None:
                bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
                qkv = F.linear(x, self.qkv.weight, bias)
            else:
                qkv = self.qkv(x)
            q, k, v = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            return q, k, v
        assert self.q_proj is not None and self.k_proj is not None and self.v_proj is not None
        q = self.q_proj(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).reshape(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).reshape(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.num_kv_heads != self.num_heads:  # grouped-query attention: consecutive heads share k/v
            group = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return q, k, v

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._attend(x, rope, attn_mask)

    def _attend(self, x: torch.Tensor, rope: Optional[torch.Tensor],
                attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._qkv(x)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = apply_rope_after_prefix(q, rope, self.num_prefix_tokens, self.rope_half)
            k = apply_rope_after_prefix(k, rope, self.num_prefix_tokens, self.rope_half)
        x = scaled_dot_product_attention(q, k, v, self.fused_attn, attn_mask=attn_mask,
                                         dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale)
        x = self.norm(x.transpose(1, 2).reshape(b, n, c))
        return self.proj_drop(self.proj(x))


def _make_mlp(mlp_type: str, dim: int, hidden: int, act_layer: LayerType, norm: Optional[NormFactory],
              drop: float) -> nn.Module:
    if mlp_type == "mlp":
        return Mlp(dim, hidden, act_layer=act_layer, norm_layer=norm, drop=drop)
    if mlp_type == "swiglu":  # separate gate / value projections
        return SwiGLU(dim, hidden, act_layer=act_layer, norm_layer=norm, drop=drop)
    if mlp_type == "glu":  # one packed projection, gate first
        return GluMlp(dim, 2 * hidden, act_layer=act_layer, norm_layer=norm, drop=drop, gate_last=False)
    raise ValueError(f"mlp_type must be 'mlp', 'swiglu' or 'glu', got {mlp_type!r}")


class EvaBlock(nn.Module):
    """Pre-norm block ``x + g1 * attn(norm1(x))``, ``x + g2 * mlp(norm2(x))``.

    ``g1``/``g2`` are per-channel layer-scale vectors (``gamma_1``/``gamma_2``, initialised to
    ``init_values``; absent when it is ``None``, ``gamma_2`` also absent without
    ``mlp_layer_scale``). ``scale_mlp`` adds the norm inside the MLP (EVA-02 sub-LN).
    ``post_norm`` normalises the branch outputs instead: ``x + norm1(attn(x))`` (EVA-02-E).
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, *, mlp_type: str = "mlp", scale_mlp: bool = False,
                 act_layer: LayerType = "gelu", init_values: Optional[float] = None, mlp_layer_scale: bool = True,
                 drop_path: float = 0.0, proj_drop: float = 0.0, norm_layer: NormFactory = nn.LayerNorm,
                 post_norm: bool = False, attn_layer: Optional[Callable[..., nn.Module]] = None,
                 **attn_kwargs: Any) -> None:
        super().__init__()
        self.register_parameter("gamma_1", None)
        self.register_parameter("gamma_2", None)
        if init_values is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            if mlp_layer_scale:
                self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        self.post_norm = post_norm
        attn = (attn_layer or EvaAttention)(dim, num_heads, proj_drop=proj_drop, norm_layer=norm_layer, **attn_kwargs)
        mlp = _make_mlp(mlp_type, dim, mlp_hidden, act_layer, norm_layer if scale_mlp else None, proj_drop)
        if post_norm:  # registration order of the published post-norm weights: attn, norm1, mlp, norm2
            self.attn, self.norm1 = attn, norm_layer(dim)
        else:
            self.norm1, self.attn = norm_layer(dim), attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if post_norm:
            self.mlp, self.norm2 = mlp, norm_layer(dim)
        else:
            self.norm2, self.mlp = norm_layer(dim), mlp
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: Optional[torch.Tensor] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.post_norm:
            y = self.norm1(self.attn(x, rope=rope, attn_mask=attn_mask))
        else:
            y = self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask)
        if self.gamma_1 is not None:
            y = y * self.gamma_1
        x = x + self.drop_path1(y)
        y = self.norm2(self.mlp(x)) if self.post_norm else self.mlp(self.norm2(x))
        if self.gamma_2 is not None:
            y = y * self.gamma_2
        return x + self.drop_path2(y)


_POOLS = ("token", "avg", "max", "avgmax", "map", "")


class Eva(FeatureMixin, nn.Module):
    """EVA-style ViT with optional rotary position embeddings.

    Args (beyond the common ones):
        embed_dim, depth, num_heads: width, blocks, heads.
        mlp_ratio / mlp_hidden: MLP width (``mlp_hidden`` wins when given); ``mlp_type``
            ``'mlp'`` | ``'swiglu'`` (separate gate/value fcs) | ``'glu'`` (packed, gate first);
            ``scale_mlp``: norm inside the MLP; ``act_layer``: its activation.
        qkv_mode, qkv_bias, k_bias, qk_norm, scale_attn_inner: attention layout (see
            :class:`EvaAttention`); ``num_kv_heads``: grouped-query attention in the blocks
            ``gqa_skip <= i < depth - gqa_skip``.
        init_values: layer-scale init (``None``: none); ``mlp_layer_scale``: also on the MLP branch;
            ``post_norm``: post-norm blocks; ``attn_layer``: attention class (default
            :class:`EvaAttention`; families such as BEiT pass a subclass).
        class_token, reg_tokens: prefix tokens. ``use_abs_pos_emb``: learned absolute position
            embedding; ``no_embed_class``: it covers the patch tokens only.
        pre_norm (``norm_pre``), final_norm (``norm``), fc_norm (after pooling; ``None``: with
            average pooling), norm_layer (``'layernorm'``/``'rmsnorm'``), norm_eps.
        rope_type: ``''`` (none), ``'axial'`` (:class:`~visionzoo.layers.rope.AxialRope`) or
            ``'mixed'`` (:class:`~visionzoo.layers.rope.MixedRope`); ``rope_temperature``,
            ``rope_coords``, ``rope_ref_grid``, ``rope_offset``, ``rope_xy``, ``rope_band_scale``,
            ``rope_half`` configure it.
        global_pool: ``'token'``, ``'avg'``, ``'max'``, ``'avgmax'``, ``'map'`` (attention-pool
            head, ``attn_pool_num_heads``/``attn_pool_mlp_ratio``) or ``''``;
            ``pool_include_prefix``: pooling also sees the prefix tokens.
        dynamic_img_size: accept any input size (position tables resampled on the fly);
            ``dynamic_img_pad``: pad inputs to a multiple of the patch size.
        patch_drop_rate: patch dropout while training.
    """

    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        mlp_hidden: Optional[int] = None,
        mlp_type: str = "mlp",
        scale_mlp: bool = False,
        act_layer: LayerType = None,
        qkv_mode: str = "fused",
        qkv_bias: bool = True,
        k_bias: bool = False,
        qk_norm: bool = False,
        num_kv_heads: Optional[int] = None,
        gqa_skip: int = 0,
        scale_attn_inner: bool = False,
        init_values: Optional[float] = None,
        mlp_layer_scale: bool = True,
        post_norm: bool = False,
        attn_layer: Optional[Callable[..., nn.Module]] = None,
        class_token: bool = True,
        reg_tokens: int = 0,
        use_abs_pos_emb: bool = True,
        no_embed_class: bool = False,
        pre_norm: bool = False,
        final_norm: bool = True,
        fc_norm: Optional[bool] = None,
        patch_bias: bool = True,
        norm_layer: LayerType = "layernorm",
        norm_eps: float = 1e-6,
        rope_type: str = "",
        rope_temperature: float = 10000.0,
        rope_coords: str = "index",
        rope_ref_grid: Optional[Sequence[int]] = None,
        rope_offset: float = 0.0,
        rope_xy: bool = False,
        rope_band_scale: float = 1.0,
        rope_half: bool = False,
        attn_pool_num_heads: Optional[int] = None,
        attn_pool_mlp_ratio: Optional[float] = None,
        pool_include_prefix: bool = False,
        dynamic_img_size: bool = False,
        dynamic_img_pad: bool = False,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        patch_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if global_pool not in _POOLS:
            raise ValueError(f"unknown global_pool {global_pool!r}; choose one of {_POOLS}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        if rope_type not in ("", "axial", "mixed"):
            raise ValueError(f"rope_type must be '', 'axial' or 'mixed', got {rope_type!r}")
        norm = _norm_factory(norm_layer, norm_eps)
        use_fc_norm = global_pool in ("avg", "max", "avgmax") if fc_norm is None else fc_norm
        if act_layer is None:
            act_layer = "gelu" if mlp_type == "mlp" else "silu"
        hidden = mlp_hidden if mlp_hidden is not None else int(embed_dim * mlp_ratio + 1e-6)

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.num_reg_tokens = reg_tokens
        self.has_class_token = class_token
        self.no_embed_class = no_embed_class
        self.dynamic_img_size = dynamic_img_size
        self.pool_include_prefix = pool_include_prefix
        self.rope_type = rope_type
        self.grad_checkpointing = False
        self._block_rope = None  # RoPE table(s) for the blocks, set by _forward_stem (forward_intermediates)

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            output_fmt="NHWC" if dynamic_img_size else "NLC", bias=patch_bias,
            strict_img_size=not dynamic_img_size, dynamic_img_pad=dynamic_img_pad)
        num_patches = self.patch_embed.num_patches
        assert num_patches is not None
        if use_abs_pos_emb:
            n_pos = num_patches if no_embed_class else num_patches + self.num_prefix_tokens
            self.pos_embed: Optional[nn.Parameter] = nn.Parameter(torch.zeros(1, n_pos, embed_dim))
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(pos_drop_rate)

        head_dim = embed_dim // num_heads
        self.rope: Optional[nn.Module]
        if rope_type == "axial":
            self.rope = AxialRope(head_dim, None if dynamic_img_size else self.patch_embed.grid_size,
                                  temperature=rope_temperature, band_scale=rope_band_scale, coords=rope_coords,
                                  ref_grid=rope_ref_grid, offset=rope_offset, xy=rope_xy, half=rope_half)
        elif rope_type == "mixed":
            self.rope = MixedRope(head_dim, depth, num_heads, half=rope_half)
        else:
            self.rope = None
        self.patch_drop = PatchDropoutWithIndices(patch_drop_rate, self.num_prefix_tokens)
        self.norm_pre = norm(embed_dim) if pre_norm else nn.Identity()

        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            EvaBlock(embed_dim, num_heads, hidden, mlp_type=mlp_type, scale_mlp=scale_mlp, act_layer=act_layer,
                     init_values=init_values, mlp_layer_scale=mlp_layer_scale, post_norm=post_norm, attn_layer=attn_layer, drop_path=dpr[i],
                     proj_drop=proj_drop_rate, norm_layer=norm, qkv_mode=qkv_mode, qkv_bias=qkv_bias,
                     k_bias=k_bias, qk_norm=qk_norm,
                     num_kv_heads=num_kv_heads if gqa_skip <= i < depth - gqa_skip else None, scale_norm=scale_attn_inner,
                     num_prefix_tokens=self.num_prefix_tokens, rope_half=rope_half, attn_drop=attn_drop_rate)
            for i in range(depth)])
        reduction = self.patch_embed.patch_size[0]
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f"blocks.{i}") for i in range(depth)]
        self.default_out_indices = tuple(range(max(depth - 3, 0), depth))

        self.norm = norm(embed_dim) if final_norm and not use_fc_norm else nn.Identity()
        self.fc_norm = norm(embed_dim) if final_norm and use_fc_norm else nn.Identity()
        if global_pool == "map":
            self.attn_pool: Optional[AttentionPoolLatent] = AttentionPoolLatent(
                embed_dim, num_heads=attn_pool_num_heads or num_heads,
                mlp_ratio=attn_pool_mlp_ratio or mlp_ratio, norm_layer=norm, act_layer="gelu")
        else:
            self.attn_pool = None
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # ---- init ---------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(0.02) linears and position embedding, near-zero prefix tokens."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        for tok in (self.cls_token, self.reg_token):
            if tok is not None:
                nn.init.normal_(tok, std=1e-6)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "reg_token", "rope.freqs"}

    # ---- classifier ---------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head (``0``: identity); optionally change the pooling (leaving ``'map'``
        drops the attention-pool head)."""
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

    # ---- input size -----------------------------------------------------------------------------
    def set_input_size(self, img_size: Optional[int | Sequence[int]] = None,
                       patch_size: Optional[int | Sequence[int]] = None) -> None:
        """Adapt a built model to a new input size and/or patch size: the patch kernel is
        resampled (FlexiViT PI-resize), the absolute position embedding resized to the new grid
        (prefix rows kept) and the RoPE table rebuilt."""
        pe = self.patch_embed
        old_grid = pe.grid_size
        if patch_size is not None:
            new_patch = to_2tuple(patch_size)
            if new_patch != pe.patch_size:
                w = resample_patch_embed(pe.proj.weight.detach(), new_patch)
                pe.proj.weight = nn.Parameter(w)
                pe.proj.kernel_size = pe.proj.stride = new_patch
                pe.patch_size = new_patch
        if img_size is not None:
            pe.img_size = to_2tuple(img_size)
        if pe.img_size is not None:
            pe.grid_size = (pe.img_size[0] // pe.patch_size[0], pe.img_size[1] // pe.patch_size[1])
            pe.num_patches = pe.grid_size[0] * pe.grid_size[1]
        if self.pos_embed is not None and pe.grid_size != old_grid:
            prefix = 0 if self.no_embed_class else self.num_prefix_tokens
            new = resample_abs_pos_embed(self.pos_embed.detach(), pe.grid_size, old_size=old_grid,
                                         num_prefix_tokens=prefix)
            self.pos_embed = nn.Parameter(new)
        if isinstance(self.rope, AxialRope) and not self.dynamic_img_size:
            self.rope.set_grid(pe.grid_size)
        for info in self.feature_info:
            info["reduction"] = pe.patch_size[0]

    # ---- forward --------------------------------------------------------------------------------
    def _pos_embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
        if self.dynamic_img_size:
            b, h, w, c = x.shape
            x = x.reshape(b, h * w, c)
            grid = [h, w]
        else:
            model_grid = self.patch_embed.grid_size
            assert model_grid is not None
            grid = [model_grid[0], model_grid[1]]
        pos = self.pos_embed
        if pos is not None and self.dynamic_img_size:
            pos = resample_abs_pos_embed(pos, (grid[0], grid[1]), old_size=self.patch_embed.grid_size,
                                         num_prefix_tokens=0 if self.no_embed_class else self.num_prefix_tokens)
        prefix: List[torch.Tensor] = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        if self.no_embed_class and pos is not None:
            x = x + pos
        if prefix:
            x = torch.cat(prefix + [x], dim=1)
        if not self.no_embed_class and pos is not None:
            x = x + pos
        return self.pos_drop(x), grid

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Tokens entering the blocks and the RoPE table(s) for them (``None`` without RoPE)."""
        x = self.patch_embed(x)
        x, grid = self._pos_embed(x)
        rope: Optional[torch.Tensor] = None
        if self.rope is not None:
            rope = self.rope.get_embed(grid)
        x, keep = self.patch_drop(x)
        if rope is not None and keep is not None:
            if self.rope_type == "mixed":  # [depth, heads, N, 2d] -> [depth, B, heads, N', 2d]
                rope = rope_gather(rope, keep).transpose(0, 1)
            else:  # [N, 2d] -> [B, 1, N', 2d]
                rope = rope_gather(rope.unsqueeze(0), keep)
        return self.norm_pre(x), rope

    def _rope_index(self, rope: Optional[torch.Tensor], index: int) -> Optional[torch.Tensor]:
        if rope is None or self.rope_type != "mixed":
            return rope
        return rope[index]

    # FeatureMixin hooks: the RoPE table is made with the stem and kept for the trunk's blocks
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        x, self._block_rope = self._embed(x)
        return x, None

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        rope = self._rope_index(self._block_rope, index)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x, rope)
        return stage(x, rope=rope)

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        self._block_rope = None
        return self.norm(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if norm:
            x = self.norm(x)
        x = x[:, self.num_prefix_tokens:]
        if output_fmt == "NLC":
            return x
        h, w = self.patch_embed.dynamic_feat_size(in_size)
        return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()

    def _prune_head(self) -> None:
        self.reset_classifier(0, "")
        self.fc_norm = nn.Identity()
        self.attn_pool = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, rope = self._embed(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            for i, blk in enumerate(self.blocks):
                x = checkpoint_module(blk, x, self._rope_index(rope, i))
        else:
            for i, blk in enumerate(self.blocks):
                x = blk(x, rope=self._rope_index(rope, i))
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        """Reduce ``[B, N, C]`` tokens to ``[B, C]`` by ``pool_type`` (default: ``global_pool``)."""
        pool_type = self.global_pool if pool_type is None else pool_type
        if pool_type == "map" and self.attn_pool is not None:
            return self.attn_pool(x if self.pool_include_prefix else x[:, self.num_prefix_tokens:])
        return pool_tokens(x, pool_type, self.num_prefix_tokens, self.pool_include_prefix)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.fc_norm(self.pool(x))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- checkpoint adaptation ------------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module,
                             interpolation: str = "bicubic", antialias: bool = True) -> dict[str, torch.Tensor]:
        """Fit a checkpoint to ``model``: resample the absolute position embedding to the model's
        grid (prefix rows kept) and the patch kernel to its patch size; drop derived RoPE tables
        and the zero key bias that some exports carry."""
        own = model.state_dict()
        out: dict[str, torch.Tensor] = {}
        prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
        for k, v in state_dict.items():
            if k.endswith(("freqs_cos", "freqs_sin", "attn.k_bias")) or (k.startswith("rope.") and k not in own):
                continue
            if k == "pos_embed" and k in own and v.shape != own[k].shape:
                num_pos = v.shape[1] - prefix
                side = int(round(num_pos ** 0.5))
                v = resample_abs_pos_embed(v, model.patch_embed.grid_size, old_size=(side, side),
                                           num_prefix_tokens=prefix, interpolation=interpolation,
                                           antialias=antialias)
            elif k == "patch_embed.proj.weight" and k in own and v.shape[-2:] != own[k].shape[-2:]:
                v = resample_patch_embed(v, own[k].shape[-2:], interpolation=interpolation, antialias=antialias)
            out[k] = v
        return out


# ------------------------------------------------------------------------------------------------
# variants
# ------------------------------------------------------------------------------------------------

def _size(dim: int, depth: int, heads: int, hidden: int) -> dict[str, Any]:
    return dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_hidden=hidden)


# EVA-02: RoPE (interleaved, rescaled to the 16x16 pre-training grid), SwiGLU MLP
_EVA02_ROPE = dict(rope_type="axial", rope_ref_grid=(16, 16))
_EVA02_TS = dict(_EVA02_ROPE, patch_size=14, mlp_type="glu", qkv_mode="fused")
_EVA02_BL = dict(_EVA02_ROPE, patch_size=14, mlp_type="swiglu", scale_mlp=True, qkv_mode="separate")
_EVA02_CLIP = dict(_EVA02_BL, scale_attn_inner=True, global_pool="token")
_EVA01 = dict(patch_size=14, qkv_mode="fused")
# RoPE-ViT (Heo et al.): axial theta 100 or learned mixed frequencies, x before y
_ROPEVIT = dict(qkv_mode="fused_bias", init_values=1e-5, global_pool="token", use_abs_pos_emb=False,
                rope_type="axial", rope_temperature=100.0, rope_xy=True)
_ROPEVIT_APE = dict(_ROPEVIT, use_abs_pos_emb=True, no_embed_class=True)
_ROPEVIT_MIXED = dict(_ROPEVIT, rope_type="mixed")
_ROPEVIT_MIXED_APE = dict(_ROPEVIT_MIXED, use_abs_pos_emb=True, no_embed_class=True)
# register-token / GAP models trained in timm with EVA-02 RoPE
_ROPE_GAP = dict(img_size=256, class_token=False, use_abs_pos_emb=False, init_values=1e-5, global_pool="avg",
                 rope_type="axial", rope_ref_grid=(16, 16))
# DINOv3: patch-centre coordinates in [-1, 1], periods 100^(k/nb), half layout
_DINOV3 = dict(img_size=256, dynamic_img_size=True, reg_tokens=4, use_abs_pos_emb=False, init_values=1e-5, global_pool="avg", fc_norm=False,
               norm_eps=1e-5, qkv_bias=False, rope_type="axial", rope_coords="centered",
               rope_temperature=100.0, rope_band_scale=2 * 3.141592653589793, rope_half=True)
_DINOV3_QKVB = dict(_DINOV3, qkv_bias=True)
_LINGBOT = dict(_DINOV3_QKVB, img_size=512, global_pool="token")
# Perception Encoder: pre-norm, RoPE on (x, y) patch indices starting at 1 (class token at 0)
_PE = dict(qkv_mode="fused_bias", pre_norm=True, patch_bias=False, norm_eps=1e-5, rope_type="axial",
           rope_offset=1.0, rope_xy=True)
_PE_CORE = dict(_PE, global_pool="map", attn_pool_num_heads=8, pool_include_prefix=True)
_PE_SPATIAL = dict(_PE, global_pool="avg", final_norm=False)
_PE_LANG = dict(_PE_SPATIAL, init_values=0.1)
# Sapiens2: RMSNorm, qk-norm, packed SwiGLU, layer scale on the attention branch only
_SAPIENS2 = dict(img_size=(1024, 768), dynamic_img_size=True, reg_tokens=8, use_abs_pos_emb=False, init_values=1e-5, mlp_layer_scale=False,
                 global_pool="token", norm_layer="rmsnorm", qkv_mode="separate", k_bias=True,
                 qk_norm=True, gqa_skip=8, mlp_type="glu", final_norm=True, rope_type="axial", rope_coords="centered",
                 rope_temperature=100.0, rope_band_scale=2 * 3.141592653589793, rope_half=True)


def _v(*parts: Mapping[str, Any], **kw: Any) -> Variant:
    args: dict[str, Any] = {}
    for p in parts:
        args.update(p)
    args.update(kw)
    return Variant(Eva, **args)


VARIANTS: dict[str, Variant] = {
    # -- EVA-02 --------------------------------------------------------------------------------
    "eva02_tiny_patch14_224": _v(_size(192, 12, 3, 512), _EVA02_TS),
    "eva02_small_patch14_224": _v(_size(384, 12, 6, 1024), _EVA02_TS),
    "eva02_base_patch14_224": _v(_size(768, 12, 12, 2048), _EVA02_BL),
    "eva02_large_patch14_224": _v(_size(1024, 24, 16, 2730), _EVA02_BL),
    "eva02_tiny_patch14_336": _v(_size(192, 12, 3, 512), _EVA02_TS, img_size=336),
    "eva02_small_patch14_336": _v(_size(384, 12, 6, 1024), _EVA02_TS, img_size=336),
    "eva02_base_patch14_448": _v(_size(768, 12, 12, 2048), _EVA02_BL, img_size=448),
    "eva02_large_patch14_448": _v(_size(1024, 24, 16, 2730), _EVA02_BL, img_size=448),
    "eva02_base_patch16_clip_224": _v(_size(768, 12, 12, 2048), _EVA02_CLIP, patch_size=16),
    "eva02_large_patch14_clip_224": _v(_size(1024, 24, 16, 2730), _EVA02_CLIP),
    "eva02_large_patch14_clip_336": _v(_size(1024, 24, 16, 2730), _EVA02_CLIP, img_size=336),
    "eva02_enormous_patch14_clip_224": _v(_size(1792, 64, 16, 15360), _EVA02_ROPE, patch_size=14, post_norm=True,
                                          global_pool="token"),
    # -- EVA-01 --------------------------------------------------------------------------------
    "eva_giant_patch14_224": _v(_size(1408, 40, 16, 6144), _EVA01),
    "eva_giant_patch14_336": _v(_size(1408, 40, 16, 6144), _EVA01, img_size=336),
    "eva_giant_patch14_560": _v(_size(1408, 40, 16, 6144), _EVA01, img_size=560),
    "eva_giant_patch14_clip_224": _v(_size(1408, 40, 16, 6144), _EVA01, global_pool="token"),
    # -- RoPE-ViT ------------------------------------------------------------------------------
    "vit_small_patch16_rope_224": _v(_size(384, 12, 6, 1536), _ROPEVIT),
    "vit_base_patch16_rope_224": _v(_size(768, 12, 12, 3072), _ROPEVIT),
    "vit_large_patch16_rope_224": _v(_size(1024, 24, 16, 4096), _ROPEVIT),
    "vit_small_patch16_rope_mixed_224": _v(_size(384, 12, 6, 1536), _ROPEVIT_MIXED),
    "vit_base_patch16_rope_mixed_224": _v(_size(768, 12, 12, 3072), _ROPEVIT_MIXED),
    "vit_large_patch16_rope_mixed_224": _v(_size(1024, 24, 16, 4096), _ROPEVIT_MIXED),
    "vit_small_patch16_rope_ape_224": _v(_size(384, 12, 6, 1536), _ROPEVIT_APE),
    "vit_base_patch16_rope_ape_224": _v(_size(768, 12, 12, 3072), _ROPEVIT_APE),
    "vit_large_patch16_rope_ape_224": _v(_size(1024, 24, 16, 4096), _ROPEVIT_APE),
    "vit_small_patch16_rope_mixed_ape_224": _v(_size(384, 12, 6, 1536), _ROPEVIT_MIXED_APE),
    "vit_base_patch16_rope_mixed_ape_224": _v(_size(768, 12, 12, 3072), _ROPEVIT_MIXED_APE),
    "vit_large_patch16_rope_mixed_ape_224": _v(_size(1024, 24, 16, 4096), _ROPEVIT_MIXED_APE),
    # -- timm RoPE + registers + GAP -----------------------------------------------------------
    "vit_medium_patch16_rope_reg1_gap_256": _v(_size(512, 12, 8, 2048), _ROPE_GAP, reg_tokens=1),
    "vit_mediumd_patch16_rope_reg1_gap_256": _v(_size(512, 20, 8, 2048), _ROPE_GAP, reg_tokens=1, qkv_bias=False),
    "vit_betwixt_patch16_rope_reg4_gap_256": _v(_size(640, 12, 10, 2560), _ROPE_GAP, reg_tokens=4),
    "vit_base_patch16_rope_reg1_gap_256": _v(_size(768, 12, 12, 3072), _ROPE_GAP, reg_tokens=1),
    # -- DINOv3 ----------------------------------------------------------------------------------
    "vit_small_patch16_dinov3": _v(_size(384, 12, 6, 1536), _DINOV3),
    "vit_small_patch16_dinov3_qkvb": _v(_size(384, 12, 6, 1536), _DINOV3_QKVB),
    "vit_small_plus_patch16_dinov3": _v(_size(384, 12, 6, 1536), _DINOV3, mlp_type="swiglu"),
    "vit_small_plus_patch16_dinov3_qkvb": _v(_size(384, 12, 6, 1536), _DINOV3_QKVB, mlp_type="swiglu"),
    "vit_base_patch16_dinov3": _v(_size(768, 12, 12, 3072), _DINOV3),
    "vit_base_patch16_dinov3_qkvb": _v(_size(768, 12, 12, 3072), _DINOV3_QKVB),
    "vit_large_patch16_dinov3": _v(_size(1024, 24, 16, 4096), _DINOV3),
    "vit_large_patch16_dinov3_qkvb": _v(_size(1024, 24, 16, 4096), _DINOV3_QKVB),
    "vit_huge_plus_patch16_dinov3": _v(_size(1280, 32, 20, 5120), _DINOV3, mlp_type="swiglu"),
    "vit_huge_plus_patch16_dinov3_qkvb": _v(_size(1280, 32, 20, 5120), _DINOV3_QKVB, mlp_type="swiglu"),
    "vit_7b_patch16_dinov3": _v(_size(4096, 40, 32, 8192), _DINOV3, mlp_type="swiglu"),
    "vit_tiny_patch16_dinov3_qkvb": _v(_size(192, 12, 3, 768), _DINOV3_QKVB),
    # -- LingBot (DINOv3 layout at 512) ----------------------------------------------------------
    "vit_small_patch16_lingbot": _v(_size(384, 12, 6, 1536), _LINGBOT),
    "vit_base_patch16_lingbot": _v(_size(768, 12, 12, 3072), _LINGBOT),
    "vit_large_patch16_lingbot": _v(_size(1024, 24, 16, 4096), _LINGBOT),
    "vit_giant_patch16_lingbot": _v(_size(1536, 40, 24, 4096), _LINGBOT, qkv_bias=False, mlp_type="swiglu"),
    # -- Perception Encoder ------------------------------------------------------------------------
    "vit_pe_core_tiny_patch16_384": _v(_size(192, 12, 3, 768), _PE_CORE, img_size=384),
    "vit_pe_core_small_patch16_384": _v(_size(384, 12, 6, 1536), _PE_CORE, img_size=384),
    "vit_pe_core_base_patch16_224": _v(_size(768, 12, 12, 3072), _PE_CORE),
    "vit_pe_core_large_patch14_336": _v(_size(1024, 24, 16, 4096), _PE_CORE, patch_size=14, img_size=336),
    "vit_pe_core_gigantic_patch14_448": _v(_size(1536, 50, 16, 8960), _PE_CORE, patch_size=14, img_size=448,
                                           class_token=False, rope_offset=0.0),
    "vit_pe_lang_large_patch14_448": _v(_size(1024, 23, 16, 4096), _PE_LANG, patch_size=14, img_size=448),
    "vit_pe_lang_gigantic_patch14_448": _v(_size(1536, 47, 16, 8960), _PE_LANG, patch_size=14, img_size=448,
                                           class_token=False, global_pool="avg", fc_norm=False, rope_offset=0.0),
    "vit_pe_spatial_tiny_patch16_512": _v(_size(192, 12, 3, 768), _PE_SPATIAL, img_size=512),
    "vit_pe_spatial_small_patch16_512": _v(_size(384, 12, 6, 1536), _PE_SPATIAL, img_size=512),
    "vit_pe_spatial_base_patch16_512": _v(_size(768, 12, 12, 3072), _PE_SPATIAL, img_size=512),
    "vit_pe_spatial_large_patch14_448": _v(_size(1024, 24, 16, 4096), _PE_SPATIAL, patch_size=14, img_size=448),
    "vit_pe_spatial_gigantic_patch14_448": _v(_size(1536, 50, 16, 8960), _PE_SPATIAL, patch_size=14, img_size=448,
                                              class_token=False, global_pool="avg", fc_norm=False, rope_offset=0.0,
                                              init_values=0.1),
    # -- Sapiens2 ----------------------------------------------------------------------------------
    "vit_base_patch16_sapiens2": _v(_size(768, 12, 12, 3072), _SAPIENS2, num_kv_heads=6),
    "vit_large_patch16_sapiens2": _v(_size(1024, 24, 16, 4096), _SAPIENS2, num_kv_heads=8),
    "vit_huge_patch16_sapiens2": _v(_size(1280, 32, 16, 5120), _SAPIENS2, num_kv_heads=8),
    "vit_giant_patch16_sapiens2": _v(_size(1536, 40, 24, 6144), _SAPIENS2, num_kv_heads=12),
    "vit_5b_patch16_sapiens2": _v(_size(2432, 56, 32, 9728), _SAPIENS2, num_kv_heads=16),
}

register_family("eva", VARIANTS)
