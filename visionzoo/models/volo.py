"""VOLO: Vision Outlooker for Visual Recognition.

Paper: Yuan, Hou, Jiang, Feng and Yan, 2021, "VOLO: Vision Outlooker for Visual Recognition",
https://arxiv.org/abs/2106.13112

A two-stage token model. The first stage (stride 8, after a conv stem) is made of *outlookers*:
outlook attention aggregates each ``k x k`` neighbourhood with weights that a single linear layer
predicts from the centre token alone (no query-key products), so fine-grained tokens are encoded
cheaply; the weights are produced on a stride-``s`` grid, the values unfolded into windows on that
grid and the weighted windows folded back (overlaps summed). A 2x2 patch merge then leads to
ordinary transformer stages (stride 16, absolute position embedding added there), followed by
class-attention blocks that bring in a class token (as in CaiT). The head is trained with token
labelling: besides the class-token classifier, an auxiliary classifier scores every patch token; at
inference the logits are ``head(cls) + 0.5 * max over tokens of aux_head(tokens)``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.mlp import Mlp
from ..layers.pos_embed import resample_abs_pos_embed_nhwc
from ..layers.token_head import TokenLinearHeadMixin
from ..layers.weight_init import init_weights_vit_style, trunc_normal_
from .base import FeatureMixin, Variant, register_family
from .vision_transformer import Block

__all__ = ["Volo", "OutlookAttention", "Outlooker", "VARIANTS"]


class OutlookAttention(nn.Module):
    """Outlook attention over an NHWC map.

    On a grid of stride ``stride`` (average-pooled input), ``attn`` predicts for every position and
    head a ``k^2 x k^2`` matrix (softmax over the last axis) that mixes the ``k x k`` window of
    values around that position; the mixed windows are folded back to ``H x W`` (overlaps summed).
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, padding: int = 1, stride: int = 1,
                 qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.kernel_size, self.padding, self.stride = kernel_size, padding, stride
        self.scale = (dim // num_heads) ** -0.5
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn = nn.Linear(dim, kernel_size ** 4 * num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, hh, ww, c = x.shape
        k, heads, s = self.kernel_size, self.num_heads, self.stride
        kk = k * k
        gh, gw = math.ceil(hh / s), math.ceil(ww / s)
        # values: the k x k window (per head) around every grid position -> [B, heads, N, k*k, C/heads]
        v = self.v(x).permute(0, 3, 1, 2)
        v = F.unfold(v, kernel_size=k, padding=self.padding, stride=s)
        v = v.reshape(b, heads, c // heads, kk, gh * gw).permute(0, 1, 4, 3, 2)
        # window weights predicted from the (pooled) centre token -> [B, heads, N, k*k, k*k]
        a = F.avg_pool2d(x.permute(0, 3, 1, 2), kernel_size=s, stride=s, ceil_mode=True).permute(0, 2, 3, 1)
        a = self.attn(a).reshape(b, gh * gw, heads, kk, kk).permute(0, 2, 1, 3, 4)
        a = self.attn_drop((a * self.scale).softmax(dim=-1))
        out = (a @ v).permute(0, 1, 4, 3, 2).reshape(b, c * kk, gh * gw)
        out = F.fold(out, output_size=(hh, ww), kernel_size=k, padding=self.padding, stride=s)
        return self.proj_drop(self.proj(out.permute(0, 2, 3, 1)))


class Outlooker(nn.Module):
    """Pre-norm residual block: outlook attention, then an MLP (NHWC in and out)."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, padding: int = 1, stride: int = 2,
                 mlp_ratio: float = 3.0, qkv_bias: bool = False, attn_drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = OutlookAttention(dim, num_heads, kernel_size, padding, stride, qkv_bias, attn_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerStage(nn.Sequential):
    """ViT pre-norm blocks on an NHWC map: tokens flattened once for the stage, then unflattened."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        for blk in self:
            x = blk(x)
        return x.reshape(b, h, w, c)


class ClassAttention(nn.Module):
    """Class attention: the class token (first) is the only query over all tokens; fused ``kv``."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q = self.q(x[:, :1]).reshape(b, 1, self.num_heads, self.head_dim).transpose(1, 2)
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, 1, c)))


class ClassBlock(nn.Module):
    """Class-attention block: updates the class token only, the patch tokens pass through."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = x[:, :1] + self.drop_path(self.attn(self.norm1(x)))
        cls = cls + self.drop_path(self.mlp(self.norm2(cls)))
        return torch.cat([cls, x[:, 1:]], dim=1)


class PatchEmbed(nn.Module):
    """Conv stem (7x7 stride 2, two 3x3; BN + ReLU each) then a ``k x k`` stride-``k`` projection."""

    def __init__(self, img_size: int = 224, stem_stride: int = 2, patch_size: int = 8, in_chans: int = 3,
                 hidden_dim: int = 64, embed_dim: int = 384) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, hidden_dim, 7, stride=stem_stride, padding=3, bias=False),
            nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim), nn.ReLU(inplace=True))
        k = patch_size // stem_stride
        self.proj = nn.Conv2d(hidden_dim, embed_dim, kernel_size=k, stride=k)
        self.num_patches = (img_size // patch_size) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x))


class Downsample(nn.Module):
    """2x2 stride-2 patch merge on an NHWC map."""

    def __init__(self, in_dim: int, out_dim: int, patch_size: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Volo(FeatureMixin, TokenLinearHeadMixin, nn.Module):
    """VOLO: conv stem, outlooker stage(s), patch merge, transformer stages (NHWC maps throughout),
    class-attention blocks and the token-labelling head.

    ``network`` holds the stages with a :class:`Downsample` after each stage flagged in
    ``downsamples``; the position embedding is added where the first downsample leaves off.
    ``use_aux_head`` adds ``0.5 * max_tokens(aux_head(tokens))`` to the class-token logits.
    """
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(self, *, layers: Sequence[int], img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "token", patch_size: int = 8, stem_hidden_dim: int = 64,
                 embed_dims: Sequence[int] = (192, 384, 384, 384), num_heads: Sequence[int] = (6, 12, 12, 12),
                 downsamples: Sequence[bool] = (True, False, False, False),
                 outlook_attention: Sequence[bool] = (True, False, False, False), mlp_ratio: float = 3.0,
                 qkv_bias: bool = False, drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, post_layers: int = 2,
                 use_aux_head: bool = True) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.num_prefix_tokens = 1
        self.patch_embed = PatchEmbed(img_size, 2, patch_size, in_chans, stem_hidden_dim, embed_dims[0])
        first_down = downsamples.index(True) if True in downsamples else None
        r = 2 if first_down is not None else 1
        grid = img_size // patch_size // r
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dims[-1]))
        self.pos_drop = nn.Dropout(pos_drop_rate)

        total = sum(layers)
        network: list[nn.Module] = []
        self.feature_info = []
        reduction = patch_size
        self._pos_index = -1
        start = 0
        for i, n in enumerate(layers):
            dpr = [drop_path_rate * (start + j) / max(total - 1, 1) for j in range(n)]
            start += n
            if outlook_attention[i]:
                stage: nn.Module = nn.Sequential(*[
                    Outlooker(embed_dims[i], num_heads[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                              attn_drop=attn_drop_rate, drop_path=dpr[j]) for j in range(n)])
            else:
                stage = TransformerStage(*[
                    Block(embed_dims[i], num_heads[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                              attn_drop=attn_drop_rate, drop_path=dpr[j]) for j in range(n)])
            network.append(stage)
            self.feature_info.append(
                dict(num_chs=embed_dims[i], reduction=reduction, module=f"network.{len(network) - 1}"))
            if downsamples[i]:
                network.append(Downsample(embed_dims[i], embed_dims[i + 1], 2))
                reduction *= 2
                if self._pos_index < 0:
                    self._pos_index = len(network)
        if self._pos_index < 0:
            self._pos_index = 0
        self.network = nn.ModuleList(network)
        self._stage_positions = [int(f["module"].split(".")[1]) for f in self.feature_info]

        if post_layers > 0:
            self.cls_token: Optional[nn.Parameter] = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))
            self.post_network = nn.ModuleList([
                ClassBlock(embed_dims[-1], num_heads[-1], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                           attn_drop=attn_drop_rate) for _ in range(post_layers)])
        else:
            self.cls_token = None
            self.post_network = nn.ModuleList()
        self.use_aux_head = use_aux_head
        self.aux_head = nn.Linear(embed_dims[-1], num_classes) if use_aux_head and num_classes > 0 else nn.Identity()
        self.norm = nn.LayerNorm(embed_dims[-1])
        self._init_token_head(num_classes, global_pool, drop_rate)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        self.apply(init_weights_vit_style)
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        dim = self.num_features
        self.aux_head = nn.Linear(dim, num_classes) if self.use_aux_head and num_classes > 0 else nn.Identity()

    # ---- forward ----------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).permute(0, 2, 3, 1)  # NHWC

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if index == self._pos_index:
            x = self.pos_drop(x + self.pos_embed)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, x)
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens, class token prepended and updated by the class-attention blocks, normed."""
        x = x.flatten(1, 2)
        cls_token = self.cls_token
        if cls_token is not None:
            x = torch.cat([cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            for blk in self.post_network:
                x = blk(x)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        # written out rather than through ``_run_stage``: TorchScript has no module-typed parameters
        for i, stage in enumerate(self.network):
            if i == self._pos_index:
                x = self.pos_drop(x + self.pos_embed)
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint_module(stage, x)
            else:
                x = stage(x)
        return self._final(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Class-token logits plus (token labelling) half the per-class max of the token logits."""
        out = self.head_drop(self._pool_tokens(x))  # (no super() call: TorchScript)
        if pre_logits:
            return out
        out = self.head(out)
        if not self.use_aux_head or self.num_classes == 0 or self.global_pool == "":
            return out
        return out + 0.5 * self.aux_head(x[:, self.num_prefix_tokens:]).max(dim=1)[0]

    # ---- FeatureMixin hooks: the network's stages (not its downsamples) are the levels --------
    _stem_level = False
    _native_fmt = "NHWC"
    _output_fmts = ("NCHW", "NHWC")
    _final_after_stop_early = True

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self._embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.network)

    def _level_positions(self) -> list[int]:
        return [p for p in self._stage_positions if p < len(self.network)]

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        if norm and is_last:
            x = self.norm(x)
        return x if output_fmt == "NHWC" else x.permute(0, 3, 1, 2).contiguous()

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.network = self.network[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    def _prune_head(self) -> None:
        self.cls_token = None
        self.post_network = nn.ModuleList()
        self.use_aux_head = False
        self.reset_classifier(0, "")

    # ---- checkpoint adaptation ------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Unwrap ``{'model': ...}`` checkpoints; resample the (NHWC) position embedding to the model's grid."""
        if "model" in state_dict:
            state_dict = state_dict["model"]  # type: ignore[assignment]
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k == "pos_embed" and v.shape != model.pos_embed.shape:
                v = resample_abs_pos_embed_nhwc(v, model.pos_embed.shape[1:3])
            out[k] = v
        return out


_d1 = Variant(Volo, layers=(4, 4, 8, 2), embed_dims=(192, 384, 384, 384), num_heads=(6, 12, 12, 12))
_d2 = Variant(Volo, layers=(6, 4, 10, 4), embed_dims=(256, 512, 512, 512), num_heads=(8, 16, 16, 16))
_d3 = _d2.but(layers=(8, 8, 16, 4))
_d4 = _d3.but(embed_dims=(384, 768, 768, 768), num_heads=(12, 16, 16, 16))
_d5 = _d4.but(layers=(12, 12, 20, 4), mlp_ratio=4.0, stem_hidden_dim=128)
VARIANTS: dict[str, Variant] = {
    "volo_d1_224": _d1,
    "volo_d1_384": _d1.but(img_size=384),
    "volo_d2_224": _d2,
    "volo_d2_384": _d2.but(img_size=384),
    "volo_d3_224": _d3,
    "volo_d3_448": _d3.but(img_size=448),
    "volo_d4_224": _d4,
    "volo_d4_448": _d4.but(img_size=448),
    "volo_d5_224": _d5,
    "volo_d5_448": _d5.but(img_size=448),
    "volo_d5_512": _d5.but(img_size=512),
}
register_family("volo", VARIANTS)
