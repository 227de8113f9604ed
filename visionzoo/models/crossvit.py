"""CrossViT: Cross-Attention Multi-Scale Vision Transformer.

Paper: Chen, Fan and Panda, 2021, "CrossViT: Cross-Attention Multi-Scale Vision Transformer for
Image Classification", https://arxiv.org/abs/2103.14899

Two ViT branches see the image at two patch sizes (a small-patch branch with narrow tokens and a
large-patch branch with wide ones). Each multi-scale block runs a few plain transformer blocks per
branch, then fuses the branches by cross-attention: the CLS token of one branch is projected to the
other branch's width, attends (as the only query) over that branch's patch tokens, and is projected
back. Only CLS tokens change during fusion, so fusion is linear in the number of tokens. The head
classifies each branch's CLS token and averages the logits.

The large-patch branch may expect a smaller image than the input (224 px in the 240-px models): the
input is resized (bicubic) to each branch's own size before its patch embedding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..features import feature_take_indices
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resample_abs_pos_embed
from ..layers.token_head import TokenLinearHeadMixin
from ..layers.weight_init import init_weights_vit_style, trunc_normal_
from .base import FeatureMixin, Variant, register_family
from .vision_transformer import Block

__all__ = ["CrossViT", "CrossAttention", "CrossAttentionBlock", "MultiScaleBlock", "VARIANTS"]


def _ln(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


class MultiConvPatchEmbed(nn.Module):
    """The "dagger" patch embedding: three convs (7x7, 3x3, 3x3 with ReLUs) whose strides multiply to
    the patch size (12 = 3*2*2, 16 = 4*2*2), a gentler tokeniser than one strided conv."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if patch_size not in (12, 16):
            raise ValueError(f"multi-conv patch embedding supports patch sizes 12 and 16, got {patch_size}")
        self.patch_size = to_2tuple(patch_size)
        self.img_size = to_2tuple(img_size)
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        # stride 4, then 3 (12-px patches, unpadded) or 2 then 2 (16-px patches)
        s2, p2, s3 = (3, 0, 1) if patch_size == 12 else (2, 1, 2)
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 4, 7, stride=4, padding=3), nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim // 4, embed_dim // 2, 3, stride=s2, padding=p2), nn.ReLU(inplace=True),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=s3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class CrossAttention(nn.Module):
    """Attention whose only query is the first (CLS) token; keys/values are all tokens.
    Returns the attended CLS token ``[B, 1, C]``."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.wq = nn.Linear(dim, dim, bias=qkv_bias)
        self.wk = nn.Linear(dim, dim, bias=qkv_bias)
        self.wv = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.wq(x[:, :1]).reshape(b, 1, h, c // h).transpose(1, 2)
        k = self.wk(x).reshape(b, n, h, c // h).transpose(1, 2)
        v = self.wv(x).reshape(b, n, h, c // h).transpose(1, 2)
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, 1, c)))


class CrossAttentionBlock(nn.Module):
    """Pre-norm residual cross-attention (no MLP): the updated CLS token ``[B, 1, C]``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _ln(dim)
        self.attn = CrossAttention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] + self.drop_path(self.attn(self.norm1(x)))


def _cls_proj(dim_in: int, dim_out: int) -> nn.Sequential:
    """LayerNorm -> GELU -> Linear: moves a CLS token between branch widths."""
    return nn.Sequential(_ln(dim_in), nn.GELU(), nn.Linear(dim_in, dim_out))


class MultiScaleBlock(nn.Module):
    """Per-branch transformer blocks, then cross-attention fusion of the CLS tokens.

    For branch ``i`` with partner ``j = i + 1 (mod n)``: ``projs[i]`` maps branch ``i``'s CLS token
    to width ``dims[j]``, ``fusion[i]`` lets it attend over ``[it, patches of j]``, and
    ``revert_projs[i]`` maps the result back to ``dims[i]`` as branch ``i``'s new CLS token.
    """

    def __init__(self, dims: Sequence[int], depth: Sequence[int],
                 num_heads: Sequence[int], mlp_ratio: Sequence[float], qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: Sequence[float] | float = 0.0) -> None:
        super().__init__()
        n = len(dims)
        self.num_branches = n
        dpr = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * max(depth[:n])
        self.blocks = nn.ModuleList([
            nn.Sequential(*[Block(dims[d], num_heads[d], mlp_ratio[d], qkv_bias=qkv_bias, proj_drop=proj_drop,
                                  attn_drop=attn_drop, drop_path=dpr[i], norm_layer=_ln)
                            for i in range(depth[d])])
            for d in range(n)])
        self.projs = nn.ModuleList([_cls_proj(dims[d], dims[(d + 1) % n]) for d in range(n)])
        self.fusion = nn.ModuleList([
            CrossAttentionBlock(dims[(d + 1) % n], num_heads[(d + 1) % n], qkv_bias=qkv_bias, proj_drop=proj_drop,
                                attn_drop=attn_drop, drop_path=dpr[-1])
            for d in range(n)])
        self.revert_projs = nn.ModuleList([_cls_proj(dims[(d + 1) % n], dims[d]) for d in range(n)])

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        # (loops over the ModuleLists, indexing the tensor lists: what TorchScript accepts)
        outs: list[torch.Tensor] = []
        for i, blk in enumerate(self.blocks):
            outs.append(blk(xs[i]))
        n = len(outs)
        cls: list[torch.Tensor] = []
        for i, proj in enumerate(self.projs):
            cls.append(proj(outs[i][:, :1]))
        fused: list[torch.Tensor] = []
        for i, fusion in enumerate(self.fusion):
            fused.append(fusion(torch.cat([cls[i], outs[(i + 1) % n][:, 1:]], dim=1)))
        res: list[torch.Tensor] = []
        for i, revert in enumerate(self.revert_projs):
            res.append(torch.cat([revert(fused[i]), outs[i][:, 1:]], dim=1))
        return res


class CrossViT(FeatureMixin, TokenLinearHeadMixin, nn.Module):
    """CrossViT: two ViT branches (each with CLS token and absolute position embedding) through
    ``len(depth)`` multi-scale blocks; per-branch final norm and classifier,
    logits averaged. ``img_scale[i]`` scales ``img_size`` to branch ``i``'s input size.

    ``forward_features`` returns the normed token sequences, one per branch; ``num_features`` is the
    sum of the branch widths (``forward_head(pre_logits=True)`` concatenates the pooled tokens).
    Feature levels: every multi-scale block of branch 0, then every block of branch 1, ...
    """
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(self, *, img_size: int = 224, img_scale: Sequence[float] = (1.0, 1.0),
                 patch_size: Sequence[int] = (8, 16), in_chans: int = 3, num_classes: int = 1000,
                 global_pool: str = "token", embed_dim: Sequence[int] = (192, 384),
                 depth: Sequence[Sequence[int]] = ((1, 3, 1), (1, 3, 1), (1, 3, 1)),
                 num_heads: Sequence[int] = (6, 12), mlp_ratio: Sequence[float] = (2.0, 2.0, 4.0),
                 multi_conv: bool = False, qkv_bias: bool = True, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.grad_checkpointing = False
        n = len(patch_size)
        if n != 2:
            raise ValueError(f"CrossViT has two branches, got {n} patch sizes")
        self.num_branches = n
        self.embed_dim = list(embed_dim)
        self.img_size = to_2tuple(img_size)
        self.img_size_scaled: list[tuple[int, int]] = [
            (int(self.img_size[0] * s), int(self.img_size[1] * s)) for s in img_scale]
        self.grid_sizes = [(hw[0] // p, hw[1] // p) for hw, p in zip(self.img_size_scaled, patch_size)]
        self.num_features = self.head_hidden_size = sum(embed_dim)
        for i in range(n):  # registered first: the published state_dict order
            gh, gw = self.grid_sizes[i]
            setattr(self, f"pos_embed_{i}", nn.Parameter(torch.zeros(1, 1 + gh * gw, embed_dim[i])))
            setattr(self, f"cls_token_{i}", nn.Parameter(torch.zeros(1, 1, embed_dim[i])))
        self.patch_embed = nn.ModuleList([
            MultiConvPatchEmbed(hw[0], p, in_chans, d) if multi_conv
            else PatchEmbed(img_size=hw, patch_size=p, in_chans=in_chans, embed_dim=d)
            for hw, p, d in zip(self.img_size_scaled, patch_size, embed_dim)])
        self.pos_drop = nn.Dropout(pos_drop_rate)

        dpr = drop_path_rates(drop_path_rate, [max(d[:-1]) + d[-1] for d in depth])
        self.blocks = nn.ModuleList([
            MultiScaleBlock(embed_dim, d, num_heads, mlp_ratio,
                            qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                            drop_path=rates)
            for d, rates in zip(depth, dpr)])
        self.norm = nn.ModuleList([_ln(d) for d in embed_dim])
        self._init_token_head(num_classes, global_pool, drop_rate)
        self.feature_info = [
            dict(num_chs=embed_dim[b], reduction=int(self.img_size[0] / self.grid_sizes[b][0]), module=f"blocks.{i}")
            for b in range(n) for i in range(len(depth))]
        self.default_out_indices = tuple((b + 1) * len(depth) - 1 for b in range(n))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(0.02) linears, position embeddings and CLS tokens."""
        self.apply(init_weights_vit_style)
        for i in range(self.num_branches):
            trunc_normal_(getattr(self, f"pos_embed_{i}"), std=0.02)
            trunc_normal_(getattr(self, f"cls_token_{i}"), std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for i in range(self.num_branches) for n in (f"pos_embed_{i}", f"cls_token_{i}")}

    def _make_head(self, num_classes: int) -> nn.Module:
        """One classifier per branch."""
        return nn.ModuleList([nn.Linear(d, num_classes) if num_classes > 0 else nn.Identity()
                              for d in self.embed_dim])

    # ---- forward ----------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per branch: resize to the branch's size (bicubic), patch-embed, prepend CLS, add positions."""
        xs: list[torch.Tensor] = []
        pos = [self.pos_embed_0, self.pos_embed_1]
        cls = [self.cls_token_0, self.cls_token_1]
        for i, embed in enumerate(self.patch_embed):
            size = self.img_size_scaled[i]
            x_ = x
            if x.shape[-2] != size[0] or x.shape[-1] != size[1]:
                x_ = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
            t = embed(x_)
            t = torch.cat([cls[i].expand(t.shape[0], -1, -1), t], dim=1)
            xs.append(self.pos_drop(t + pos[i]))
        return xs

    def _final(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for i, norm in enumerate(self.norm):
            out.append(norm(xs[i]))
        return out

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        xs = self._embed(x)
        # written out rather than through ``_run_stage``: TorchScript has no module-typed parameters
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                xs = checkpoint_module(blk, xs)
            else:
                xs = blk(xs)
        return self._final(xs)

    def forward_head(self, xs: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            pooled = [x[:, 1:].mean(dim=1) for x in xs]
        else:
            pooled = [x[:, 0] for x in xs]
        pooled = [self.head_drop(p) for p in pooled]
        if pre_logits or self.num_classes == 0:  # no classifier: the pooled tokens of every branch
            return torch.cat(pooled, dim=1)
        logits: list[torch.Tensor] = []
        for i, head in enumerate(self.head):
            logits.append(head(pooled[i]))
        return torch.stack(logits, dim=0).mean(dim=0)

    # ---- features: levels (branch b, block i) at index b * len(blocks) + i -------------------
    _output_fmts = ("NCHW", "NLC")

    def _run_stage(self, index: int, stage: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_module(stage, xs)
        return stage(xs)

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _level_positions(self) -> list[int]:
        return list(range(len(self.blocks))) * self.num_branches

    def _branch_map(self, x: torch.Tensor, branch: int, norm: bool, output_fmt: str,
                    in_size: tuple[int, int]) -> torch.Tensor:
        if norm:
            x = self.norm[branch](x)
        x = x[:, 1:]
        if output_fmt == "NLC":
            return x
        gh, gw = self.grid_sizes[branch]
        return x.reshape(x.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()

    @torch.jit.ignore
    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Per-branch token grids after the selected multi-scale blocks (CLS token dropped).

        Written out rather than inherited: one trunk position carries one level per branch.
        """
        if output_fmt not in self._output_fmts:
            raise ValueError(f"CrossViT supports output_fmt 'NCHW' or 'NLC', got {output_fmt!r}")
        nb = len(self.blocks)
        take, max_index = feature_take_indices(nb * self.num_branches, indices)
        last = max(i % nb for i in take)
        blocks = list(self.blocks)
        if stop_early or intermediates_only:
            blocks = blocks[:last + 1]
        in_size = (x.shape[-2], x.shape[-1])
        xs = self._embed(x)
        per_block: dict[int, list[torch.Tensor]] = {}
        for i, blk in enumerate(blocks):
            xs = self._run_stage(i, blk, xs)
            per_block[i] = xs
        maps = [self._branch_map(per_block[i % nb][i // nb], i // nb, norm, output_fmt, in_size) for i in take]
        if intermediates_only:
            return maps
        return self._final(xs), maps

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]
        if prune_norm:
            self.norm = nn.ModuleList([nn.Identity() for _ in range(self.num_branches)])

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Keep the blocks up to the deepest selected one (over all branches)."""
        nb = len(self.blocks)
        take, _ = feature_take_indices(nb * self.num_branches, indices)
        self._prune_to(max(i % nb for i in take) + 1, prune_norm)
        if prune_head:
            self._prune_head()
        return take

    # ---- checkpoint adaptation ------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample each branch's position embedding to the model's grid."""
        out: dict[str, torch.Tensor] = {}
        for k, v in state_dict.items():
            if k.startswith("pos_embed_"):
                target = getattr(model, k, None)
                if target is not None and v.shape != target.shape:
                    v = resample_abs_pos_embed(v, model.grid_sizes[int(k.rsplit("_", 1)[1])])
            out[k] = v
        return out


def _cv(embed_dim: tuple[int, int], blocks: int, heads: int, mlp: float, **kw) -> Variant:
    return Variant(CrossViT, img_scale=(1.0, 224 / 240), patch_size=(12, 16), embed_dim=embed_dim,
                   depth=((1, blocks, 0),) * 3, num_heads=(heads, heads), mlp_ratio=(mlp, mlp, 1.0),
                   img_size=240, **kw)


_v9, _v15, _v18 = _cv((128, 256), 3, 4, 3.0), _cv((192, 384), 5, 6, 3.0), _cv((224, 448), 6, 7, 3.0)
_big = dict(img_size=408, img_scale=(1.0, 384 / 408))
VARIANTS: dict[str, Variant] = {
    "crossvit_tiny_240": _cv((96, 192), 4, 3, 4.0),
    "crossvit_small_240": _cv((192, 384), 4, 6, 4.0),
    "crossvit_base_240": _cv((384, 768), 4, 12, 4.0),
    "crossvit_9_240": _v9,
    "crossvit_15_240": _v15,
    "crossvit_18_240": _v18,
    "crossvit_9_dagger_240": _v9.but(multi_conv=True),
    "crossvit_15_dagger_240": _v15.but(multi_conv=True),
    "crossvit_15_dagger_408": _v15.but(multi_conv=True, **_big),
    "crossvit_18_dagger_240": _v18.but(multi_conv=True),
    "crossvit_18_dagger_408": _v18.but(multi_conv=True, **_big),
}
register_family("crossvit", VARIANTS)
