"""CaiT: Class-Attention in Image Transformers.

Paper: Touvron et al., 2021, "Going deeper with Image Transformers", https://arxiv.org/abs/2103.17239

Three changes to a plain ViT let it go deep (up to 48 blocks):
    * LayerScale: every residual branch is multiplied by a learned per-channel vector
      (``gamma_1``/``gamma_2``) initialised near zero;
    * talking-heads attention: the attention logits are mixed across heads by a learned
      ``heads x heads`` linear before the softmax (``proj_l``) and again after it (``proj_w``);
    * the class token joins late: the self-attention trunk sees only patch tokens, then a short
      class-attention stage updates the class token alone (its query is the class token, keys and
      values the class token plus the frozen patch tokens).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_module, checkpoint_seq
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family

__all__ = ["Cait", "TalkingHeadAttn", "ClassAttn", "LayerScaleBlock", "LayerScaleBlockClassAttn", "VARIANTS"]


class TalkingHeadAttn(nn.Module):
    """Multi-head self-attention whose logits and probabilities are each mixed across heads."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_l = nn.Linear(num_heads, num_heads)
        self.proj_w = nn.Linear(num_heads, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)                       # [B, H, N, N]
        attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)    # mix heads before softmax
        attn = attn.softmax(dim=-1)
        attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)    # and after it
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class ClassAttn(nn.Module):
    """Attention with the first token as the only query: returns the updated class token ``[B, 1, C]``."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, d = self.num_heads, c // self.num_heads
        q = self.q(x[:, :1]).reshape(b, 1, h, d).transpose(1, 2)
        k = self.k(x).reshape(b, n, h, d).transpose(1, 2)
        v = self.v(x).reshape(b, n, h, d).transpose(1, 2)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        attn = self.attn_drop(attn)
        x_cls = (attn @ v).transpose(1, 2).reshape(b, 1, c)
        return self.proj_drop(self.proj(x_cls))


class LayerScaleBlock(nn.Module):
    """Pre-norm block with talking-heads attention; each branch scaled by ``gamma_1``/``gamma_2``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 init_values: float = 1e-4, attn_block: type[nn.Module] = TalkingHeadAttn) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma_1 = nn.Parameter(torch.empty(dim))
        self.gamma_2 = nn.Parameter(torch.empty(dim))
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn_block(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma_1, self.init_values)
        nn.init.constant_(self.gamma_2, self.init_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class LayerScaleBlockClassAttn(LayerScaleBlock):
    """Class-attention block: updates only the class token, reading the (fixed) patch tokens."""

    def __init__(self, dim: int, num_heads: int, **kwargs: Any) -> None:
        kwargs.setdefault("attn_block", ClassAttn)
        super().__init__(dim, num_heads, **kwargs)

    def forward_cls(self, x: torch.Tensor, x_cls: torch.Tensor) -> torch.Tensor:
        u = torch.cat([x_cls, x], dim=1)
        x_cls = x_cls + self.drop_path(self.gamma_1 * self.attn(self.norm1(u)))
        return x_cls + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x_cls)))


class Cait(FeatureMixin, nn.Module):
    """CaiT: a patch-token-only LayerScale/talking-heads trunk followed by ``depth_token_only``
    class-attention blocks that bring in the class token; the head reads the normed class token
    (``global_pool='token'``) or the mean of the patch tokens (``'avg'``)."""
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(self, *, img_size: int | Sequence[int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "token", embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, init_values: float = 1e-4, depth_token_only: int = 2,
                 mlp_ratio_token_only: float = 4.0) -> None:
        super().__init__()
        if global_pool not in ("", "token", "avg"):
            raise ValueError(f"global_pool must be '', 'token' or 'avg', got {global_pool!r}")
        self.num_classes, self.global_pool, self.grad_checkpointing = num_classes, global_pool, False
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))  # sized below, kept before patch_embed
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        assert num_patches is not None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = [drop_path_rate] * depth  # CaiT uses the same drop-path rate in every block
        self.blocks = nn.Sequential(*[
            LayerScaleBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_drop_rate, attn_drop_rate, dpr[i],
                            init_values)
            for i in range(depth)])
        r = self.patch_embed.feat_ratio()[0]
        self.feature_info = [dict(num_chs=embed_dim, reduction=r, module=f"blocks.{i}") for i in range(depth)]
        self.blocks_token_only = nn.ModuleList([
            LayerScaleBlockClassAttn(embed_dim, num_heads, mlp_ratio=mlp_ratio_token_only, qkv_bias=qkv_bias,
                                     init_values=init_values)
            for _ in range(depth_token_only)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(0.02) linears and embeddings, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("", "token", "avg"):
                raise ValueError(f"global_pool must be '', 'token' or 'avg', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_drop(self.patch_embed(x) + self.pos_embed)

    def _class_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Class-attention stage and final norm: patch tokens -> ``[cls, patches]`` tokens."""
        cls_token = self.cls_token
        if cls_token is None:  # pruned for feature extraction
            return self.norm(x)
        x_cls = cls_token.expand(x.shape[0], -1, -1)
        for blk in self.blocks_token_only:
            x_cls = blk.forward_cls(x, x_cls)
        return self.norm(torch.cat([x_cls, x], dim=1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        # written out rather than through ``_run_stage``: TorchScript has no module-typed parameters
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self._class_attention(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == "token":
            x = x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- FeatureMixin hooks: one level per self-attention block (patch tokens only) ----------
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")
    _final_after_stop_early = True

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self._embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x)
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self._class_attention(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if norm:
            x = self.norm(x)
        if output_fmt == "NLC":
            return x
        gh, gw = self.patch_embed.dynamic_feat_size(in_size)
        return x.reshape(x.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    def _prune_head(self) -> None:
        self.cls_token = None
        self.blocks_token_only = nn.ModuleList()
        self.reset_classifier(0, "")

    # ---- checkpoint adaptation ------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Unwrap ``{'model': ...}`` checkpoints and resample the position embedding to the model's grid."""
        if "model" in state_dict:
            state_dict = state_dict["model"]  # type: ignore[assignment]
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k == "pos_embed" and v.shape != model.pos_embed.shape:
                grid = model.patch_embed.grid_size
                v = resample_abs_pos_embed(v, grid, num_prefix_tokens=0)
            out[k] = v
        return out


_c = Variant(Cait, patch_size=16, depth_token_only=2)
VARIANTS: dict[str, Variant] = {
    "cait_xxs24_224": _c.but(img_size=224, embed_dim=192, depth=24, num_heads=4, init_values=1e-5),
    "cait_xxs24_384": _c.but(img_size=384, embed_dim=192, depth=24, num_heads=4, init_values=1e-5),
    "cait_xxs36_224": _c.but(img_size=224, embed_dim=192, depth=36, num_heads=4, init_values=1e-5),
    "cait_xxs36_384": _c.but(img_size=384, embed_dim=192, depth=36, num_heads=4, init_values=1e-5),
    "cait_xs24_384": _c.but(img_size=384, embed_dim=288, depth=24, num_heads=6, init_values=1e-5),
    "cait_s24_224": _c.but(img_size=224, embed_dim=384, depth=24, num_heads=8, init_values=1e-5),
    "cait_s24_384": _c.but(img_size=384, embed_dim=384, depth=24, num_heads=8, init_values=1e-5),
    "cait_s36_384": _c.but(img_size=384, embed_dim=384, depth=36, num_heads=8, init_values=1e-6),
    "cait_m36_384": _c.but(img_size=384, embed_dim=768, depth=36, num_heads=16, init_values=1e-6),
    "cait_m48_448": _c.but(img_size=448, embed_dim=768, depth=48, num_heads=16, init_values=1e-6),
}
register_family("cait", VARIANTS)
