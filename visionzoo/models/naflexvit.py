"""NaFlexViT: a ViT that takes images of any size and aspect ratio as variable-length patch sequences.

Papers:
    * NaViT: Dehghani et al., 2023, "Patch n' Pack: NaViT, a Vision Transformer for any Aspect Ratio
      and Resolution", https://arxiv.org/abs/2307.06304
    * FlexiViT: Beyer et al., 2023, https://arxiv.org/abs/2212.08013
    * SigLIP 2 (NaFlex variant): Tschannen et al., 2025, https://arxiv.org/abs/2502.14786
    * AM-RADIO / C-RADIO: Ranzinger et al., 2024, https://arxiv.org/abs/2312.06709

The transformer is the plain ViT (:class:`~visionzoo.models.vision_transformer.Block`); what is
different is the embedding. Patches are projected by a linear layer on flattened ``(ph, pw, C)``
pixels, so the model can be fed either an image (patchified here) or a pre-patchified, padded
batch ``{"patches": [B, N, P*P*C], "patch_coord": [B, N, 2] (row, col), "patch_valid": [B, N]}``
in which every sample keeps its own grid and aspect ratio. The learned position embedding is a
small grid (or two 1-D tables, "factorized") resampled per sample to that sample's patch grid;
with ``pos_embed_ar_preserving`` it is resampled to a square of the longer side and cropped, so an
image's aspect ratio does not stretch the table. Padding tokens are masked out of attention and
of pooling.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType
from ..layers.attention import AttentionPoolLatent
from ..layers.grad_checkpoint import checkpoint_module
from ..layers.helpers import to_2tuple
from ..layers.patch_embed import resample_patch_embed
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family
from .vision_transformer import PatchDropout, resolve_block, resolve_mlp_layer, resolve_norm_layer

__all__ = ["NaFlexVit", "NaFlexEmbeds", "patchify", "image_to_patch_batch", "VARIANTS"]

PatchBatch = Dict[str, torch.Tensor]
_POOLS = ("token", "avg", "max", "avgmax", "map", "")


def patchify(x: torch.Tensor, patch_size: Sequence[int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """``[B, C, H, W]`` -> ``[B, gh*gw, ph*pw*C]`` row-major patches, each flattened ``(ph, pw, C)``."""
    b, c, h, w = x.shape
    ph, pw = int(patch_size[0]), int(patch_size[1])
    gh, gw = h // ph, w // pw
    x = x[:, :, :gh * ph, :gw * pw].reshape(b, c, gh, ph, gw, pw).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, gh * gw, ph * pw * c), (gh, gw)


def image_to_patch_batch(images: Sequence[torch.Tensor], patch_size: int | Sequence[int],
                         max_len: Optional[int] = None) -> PatchBatch:
    """Images of different sizes (``[C, H, W]`` each) -> one padded NaFlex patch batch.

    Each image keeps its own grid (no resizing); sequences are right-padded to the longest (or
    ``max_len``) and ``patch_valid`` marks the real patches.
    """
    ps = to_2tuple(patch_size)
    seqs, coords = [], []
    for img in images:
        p, (gh, gw) = patchify(img.unsqueeze(0), ps)
        rows = torch.arange(gh, device=img.device).repeat_interleave(gw)
        cols = torch.arange(gw, device=img.device).repeat(gh)
        seqs.append(p[0])
        coords.append(torch.stack([rows, cols], dim=-1))
    n = max_len or max(s.shape[0] for s in seqs)
    b, dim = len(seqs), seqs[0].shape[-1]
    patches = seqs[0].new_zeros(b, n, dim)
    coord = torch.zeros(b, n, 2, dtype=torch.long, device=patches.device)
    valid = torch.zeros(b, n, dtype=torch.bool, device=patches.device)
    for i, (s, c) in enumerate(zip(seqs, coords)):
        k = min(n, s.shape[0])
        patches[i, :k], coord[i, :k], valid[i, :k] = s[:k], c[:k], True
    return {"patches": patches, "patch_coord": coord, "patch_valid": valid}


def _resize_nchw(x: torch.Tensor, size: Tuple[int, int], mode: str, align_corners: bool = False) -> torch.Tensor:
    """Resize in float32: antialiased (PIL-style kernels, also when enlarging), or with
    ``align_corners`` plain corner-aligned interpolation (RADIO's convention)."""
    if x.shape[-2] == size[0] and x.shape[-1] == size[1]:
        return x
    dtype = x.dtype
    return F.interpolate(x.float(), size=size, mode=mode, align_corners=align_corners,
                         antialias=not align_corners).to(dtype)


class NaFlexEmbeds(nn.Module):
    """Prefix tokens, learned position embedding resampled per grid, and the linear patch projection.

    Args:
        pos_embed: ``'learned'`` (a ``[1, gh, gw, C]`` grid), ``'factorized'`` (``pos_embed_y``
            ``[1, gh, C]`` plus ``pos_embed_x`` ``[1, gw, C]``) or ``'none'``.
        pos_embed_grid_size: the stored table's grid.
        pos_embed_ar_preserving: resample to a square of the longer grid side, then crop.
        pos_embed_interp_mode: ``F.interpolate`` mode for the resampling (antialiased kernels).
        pos_embed_align_corners: resample corner-aligned without antialiasing (RADIO).
    """

    def __init__(self, patch_size: int | Sequence[int] = 16, in_chans: int = 3, embed_dim: int = 768,
                 class_token: bool = False, reg_tokens: int = 0, pos_embed: str = "learned",
                 pos_embed_grid_size: Sequence[int] = (16, 16), pos_embed_ar_preserving: bool = False,
                 pos_embed_interp_mode: str = "bicubic", pos_embed_align_corners: bool = False,
                 proj_bias: bool = True) -> None:
        super().__init__()
        if pos_embed not in ("learned", "factorized", "none"):
            raise ValueError(f"pos_embed must be 'learned', 'factorized' or 'none', got {pos_embed!r}")
        self.patch_size = to_2tuple(patch_size)
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.pos_embed_type = pos_embed
        self.pos_embed_grid_size = (int(pos_embed_grid_size[0]), int(pos_embed_grid_size[1]))
        self.pos_embed_ar_preserving = pos_embed_ar_preserving
        self.pos_embed_interp_mode = pos_embed_interp_mode
        self.pos_embed_align_corners = pos_embed_align_corners
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        gh, gw = self.pos_embed_grid_size
        self.pos_embed = self.pos_embed_y = self.pos_embed_x = None
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, gh, gw, embed_dim))
        elif pos_embed == "factorized":
            self.pos_embed_y = nn.Parameter(torch.zeros(1, gh, embed_dim))
            self.pos_embed_x = nn.Parameter(torch.zeros(1, gw, embed_dim))
        self.proj = nn.Linear(self.patch_size[0] * self.patch_size[1] * in_chans, embed_dim, bias=proj_bias)

    def feat_ratio(self) -> Tuple[int, int]:
        return self.patch_size

    def dynamic_feat_size(self, img_size: Sequence[int]) -> Tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def pos_grid(self, grid: Tuple[int, int]) -> Optional[torch.Tensor]:
        """The position embedding for one ``(gh, gw)`` grid, ``[gh, gw, C]`` (``None``: no embedding)."""
        gh, gw = grid
        if self.pos_embed is not None:
            table = self.pos_embed.permute(0, 3, 1, 2)
            if self.pos_embed_ar_preserving:
                side = max(gh, gw)
                table = _resize_nchw(table, (side, side), self.pos_embed_interp_mode,
                                     self.pos_embed_align_corners)[:, :, :gh, :gw]
            else:
                table = _resize_nchw(table, (gh, gw), self.pos_embed_interp_mode, self.pos_embed_align_corners)
            return table[0].permute(1, 2, 0)
        if self.pos_embed_y is not None and self.pos_embed_x is not None:
            if self.pos_embed_ar_preserving:
                side = max(gh, gw)
                sizes = (side, side)
            else:
                sizes = (gh, gw)
            mode = "linear" if self.pos_embed_interp_mode in ("bilinear", "linear") else self.pos_embed_interp_mode
            ac = self.pos_embed_align_corners
            ys = self._resize_1d(self.pos_embed_y, sizes[0], mode, ac)[:gh]
            xs = self._resize_1d(self.pos_embed_x, sizes[1], mode, ac)[:gw]
            return ys[:, None, :] + xs[None, :, :]
        return None

    @staticmethod
    def _resize_1d(table: torch.Tensor, size: int, mode: str, align_corners: bool) -> torch.Tensor:
        """``[1, L, C]`` -> ``[size, C]`` along the position axis (bicubic via a 2-D resize of height 1)."""
        if table.shape[1] == size:
            return table[0]
        grid = table.permute(0, 2, 1).unsqueeze(-2)  # [1, C, 1, L]
        mode2d = "bilinear" if mode == "linear" else mode
        out = _resize_nchw(grid, (1, size), mode2d, align_corners)
        return out[0, :, 0].t()

    def _prefix(self, b: int) -> List[torch.Tensor]:
        toks: List[torch.Tensor] = []
        if self.cls_token is not None:
            toks.append(self.cls_token.expand(b, -1, -1))
        if self.reg_token is not None:
            toks.append(self.reg_token.expand(b, -1, -1))
        return toks

    def forward(self, x: torch.Tensor, patch_coord: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Image ``[B, C, H, W]`` or patches ``[B, N, P*P*C]`` with ``patch_coord`` -> ``[B, prefix+N, C]``."""
        if patch_coord is None:
            patches, grid = patchify(x, self.patch_size)
            tokens = self.proj(patches)
            pos = self.pos_grid(grid)
            if pos is not None:
                tokens = tokens + pos.reshape(1, grid[0] * grid[1], -1).to(tokens.dtype)
        else:
            tokens = self.proj(x)
            tokens = self._add_pos_by_coord(tokens, patch_coord)
        prefix = self._prefix(tokens.shape[0])
        return torch.cat(prefix + [tokens], dim=1) if prefix else tokens

    def _add_pos_by_coord(self, tokens: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
        """Each sample's grid is read from its coordinates (max + 1); samples sharing a grid share one
        resampled table, looked up at the coordinates (padding rows read position 0, masked later)."""
        if self.pos_embed_type == "none":
            return tokens
        grids = coord.amax(dim=1) + 1  # [B, 2]
        out = tokens.clone()
        for g in torch.unique(grids, dim=0).tolist():
            sel = ((grids[:, 0] == g[0]) & (grids[:, 1] == g[1])).nonzero().flatten()
            table = self.pos_grid((int(g[0]), int(g[1])))
            assert table is not None
            flat = table.reshape(-1, table.shape[-1]).to(tokens.dtype)
            idx = coord[sel, :, 0] * int(g[1]) + coord[sel, :, 1]
            out[sel] = tokens[sel] + flat[idx]
        return out


class NaFlexVit(FeatureMixin, nn.Module):
    """ViT over NaFlex embeddings (see the module docstring).

    Besides images, :meth:`forward`, :meth:`forward_features` and :meth:`forward_intermediates`
    accept a NaFlex patch batch (a dict from :func:`image_to_patch_batch`): padding tokens are
    masked in every attention and excluded from average/max/attention pooling.

    Args:
        img_size: the nominal input size (pretrained cfg, feature grid); any size runs.
        pos_embed, pos_embed_grid_size, pos_embed_ar_preserving, pos_embed_interp_mode,
        pos_embed_align_corners: see
            :class:`NaFlexEmbeds`.
        global_pool: ``'token'``, ``'avg'``, ``'max'``, ``'avgmax'``, ``'map'`` or ``''``.
        fc_norm: norm after pooling instead of before (``None``: for ``'avg'``/``'max'``/``'avgmax'``).
        final_norm: a final norm at all (RADIO has none).
        remaining arguments as :class:`~visionzoo.models.vision_transformer.VisionTransformer`.
    """
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}

    def __init__(
        self,
        *,
        img_size: int | Sequence[int] = 384,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        init_values: float | None = None,
        class_token: bool = False,
        reg_tokens: int = 0,
        pos_embed: str = "learned",
        pos_embed_grid_size: Sequence[int] = (16, 16),
        pos_embed_ar_preserving: bool = False,
        pos_embed_interp_mode: str = "bicubic",
        pos_embed_align_corners: bool = False,
        final_norm: bool = True,
        fc_norm: bool | None = None,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        patch_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: LayerType = "layernorm",
        norm_eps: float = 1e-6,
        act_layer: LayerType = "gelu",
        block_fn: str = "block",
        mlp_layer: str = "mlp",
        weight_init: str = "",
    ) -> None:
        super().__init__()
        if global_pool not in _POOLS:
            raise ValueError(f"unknown global_pool {global_pool!r}; choose one of {_POOLS}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True")
        norm = resolve_norm_layer(norm_layer, norm_eps)
        use_fc_norm = global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.img_size = to_2tuple(img_size)
        self.has_class_token = class_token
        self.grad_checkpointing = False

        self.in_chans = in_chans  # the patch embedding is a linear layer over patch area x channels
        self.embeds = NaFlexEmbeds(patch_size, in_chans, embed_dim, class_token, reg_tokens, pos_embed,
                                   pos_embed_grid_size, pos_embed_ar_preserving, pos_embed_interp_mode,
                                   pos_embed_align_corners)
        self.num_prefix_tokens = self.embeds.num_prefix_tokens
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.patch_drop = (PatchDropout(patch_drop_rate, self.num_prefix_tokens) if patch_drop_rate > 0
                           else nn.Identity())
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        block_cls = resolve_block(block_fn)
        self.blocks = nn.Sequential(*[
            block_cls(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm,
                      proj_bias=proj_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                      init_values=init_values, drop_path=dpr[i], act_layer=act_layer, norm_layer=norm,
                      mlp_layer=resolve_mlp_layer(mlp_layer), layer_idx=i)
            for i in range(depth)])
        reduction = self.embeds.patch_size[0]
        self.feature_info = [dict(num_chs=embed_dim, reduction=reduction, module=f"blocks.{i}") for i in range(depth)]
        self.norm = norm(embed_dim) if final_norm and not use_fc_norm else nn.Identity()
        self.attn_pool: Optional[AttentionPoolLatent] = None
        if global_pool == "map":
            self.attn_pool = AttentionPoolLatent(embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                                 norm_layer=norm, act_layer=act_layer)
        self.fc_norm = norm(embed_dim) if final_norm and use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if weight_init != "skip":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(0.02) linears and position tables, near-zero prefix tokens."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        e = self.embeds
        for p in (e.pos_embed, e.pos_embed_y, e.pos_embed_x):
            if p is not None:
                trunc_normal_(p, std=0.02)
        for p in (e.cls_token, e.reg_token):
            if p is not None:
                nn.init.normal_(p, std=1e-6)
        if self.attn_pool is not None:
            self.attn_pool.reset_parameters()

    def no_weight_decay(self) -> set:
        return {"embeds.pos_embed", "embeds.pos_embed_y", "embeds.pos_embed_x", "embeds.cls_token",
                "embeds.reg_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
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

    def set_input_size(self, img_size: int | Sequence[int] | None = None,
                       patch_size: int | Sequence[int] | None = None) -> None:
        """Change the nominal input size and/or the patch size of a built model.

        Any image size runs already (the position table is resampled per grid); a new patch size
        resamples the projection kernel (FlexiViT PI-resize) so tokens of resized patches keep
        their value.
        """
        if img_size is not None:
            self.img_size = to_2tuple(img_size)
        if patch_size is not None:
            new = to_2tuple(patch_size)
            e = self.embeds
            if new != e.patch_size:
                old = e.patch_size
                w = e.proj.weight.detach().reshape(-1, old[0], old[1], e.in_chans).permute(0, 3, 1, 2)
                w = resample_patch_embed(w, new).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
                proj = nn.Linear(w.shape[1], w.shape[0], bias=e.proj.bias is not None,
                                 device=w.device, dtype=w.dtype)
                with torch.no_grad():
                    proj.weight.copy_(w)
                    if e.proj.bias is not None:
                        proj.bias.copy_(e.proj.bias)
                e.proj, e.patch_size = proj, new
                for info in self.feature_info:
                    info["reduction"] = new[0]

    # ---- forward --------------------------------------------------------------------------
    def _embed(self, x: Union[torch.Tensor, PatchBatch]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Tokens and (for a patch batch) the ``[B, prefix+N]`` validity of each token."""
        if isinstance(x, dict):
            valid = x.get("patch_valid")
            x = self.embeds(x["patches"], x["patch_coord"])
            if valid is not None:
                prefix = valid.new_ones(valid.shape[0], self.num_prefix_tokens)
                valid = torch.cat([prefix, valid.bool()], dim=1)
        else:
            x, valid = self.embeds(x), None
        x = self.pos_drop(x)
        if valid is None:
            x = self.patch_drop(x)
        return x, valid

    @staticmethod
    def _attn_mask(valid: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """Key padding -> boolean ``[B, 1, 1, N]`` mask (True: attend)."""
        return None if valid is None else valid[:, None, None, :]

    def _run_blocks(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint_module(blk, x, mask)
            else:
                x = blk(x, attn_mask=mask)
        return x

    def forward_features(self, x: Union[torch.Tensor, PatchBatch]) -> torch.Tensor:
        x, valid = self._embed(x)
        x = self._run_blocks(x, self._attn_mask(valid))
        return self.norm(x)

    def pool(self, x: torch.Tensor, pool_type: str | None = None,
             valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, C]``; ``valid`` (``[B, N]``, prefix included) excludes padding."""
        pool_type = self.global_pool if pool_type is None else pool_type
        if pool_type == "token":
            return x[:, 0]
        if not pool_type:
            return x
        n = self.num_prefix_tokens
        patches = x[:, n:]
        keep = valid[:, n:] if valid is not None else None
        if pool_type == "map":
            if self.attn_pool is None:
                raise ValueError("this model has no attention-pool head")
            return self.attn_pool(patches, attn_mask=None if keep is None else keep[:, None, None, :])
        if keep is None:
            avg, mx = patches.mean(dim=1), patches.amax(dim=1)
        else:
            k = keep.unsqueeze(-1).to(patches.dtype)
            avg = (patches * k).sum(1) / k.sum(1).clamp(min=1.0)
            mx = patches.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(dim=1)
        if pool_type == "avg":
            return avg
        if pool_type == "max":
            return mx
        return 0.5 * (avg + mx)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False,
                     patch_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        valid = None
        if patch_valid is not None:
            valid = torch.cat([patch_valid.new_ones(patch_valid.shape[0], self.num_prefix_tokens),
                               patch_valid.bool()], dim=1)
        x = self.fc_norm(self.pool(x, valid=valid))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Union[torch.Tensor, PatchBatch]) -> torch.Tensor:
        valid = x.get("patch_valid") if isinstance(x, dict) else None
        return self.forward_head(self.forward_features(x), patch_valid=valid)

    # ---- features: FeatureMixin hooks ---------------------------------------------------
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")
    _final_after_stop_early = True

    def _forward_stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self._embed(x)[0], None

    def _feature_stages(self) -> List[nn.Module]:
        return list(self.blocks)

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_module(stage, x)
        return stage(x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: Tuple[int, int]) -> torch.Tensor:
        if norm:
            x = self.norm(x)
        x = x[:, self.num_prefix_tokens:]
        if output_fmt == "NLC":
            return x
        gh, gw = self.embeds.dynamic_feat_size(in_size)
        return x.reshape(x.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()

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

    def forward_intermediates(self, x: Union[torch.Tensor, PatchBatch], indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> Any:
        """Block outputs at ``indices`` (see :meth:`FeatureMixin.forward_intermediates`).

        For a NaFlex patch batch the maps are per-sample patch sequences ``[B, N, C]`` (``'NLC'``;
        padding rows included, see ``patch_valid``), or, with ``output_fmt='NCHW'``, a list per
        level of per-sample ``[C, gh, gw]`` grids scattered from the valid patches' coordinates.
        """
        if not isinstance(x, dict):
            return super().forward_intermediates(x, indices, norm, stop_early, output_fmt, intermediates_only)
        from ..features import feature_take_indices

        if output_fmt not in self._output_fmts:
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), indices)
        blocks = list(self.blocks)
        if stop_early or intermediates_only:
            blocks = blocks[:max_index + 1]
        coord, patch_valid = x["patch_coord"], x.get("patch_valid")
        h, valid = self._embed(x)
        mask = self._attn_mask(valid)
        outs: List[Any] = []
        for i, blk in enumerate(blocks):
            h = blk(h, attn_mask=mask)
            if i in take:
                t = (self.norm(h) if norm else h)[:, self.num_prefix_tokens:]
                outs.append(t if output_fmt == "NLC" else self._scatter_grids(t, coord, patch_valid))
        if intermediates_only:
            return outs
        if len(blocks) == len(self.blocks):
            h = self.norm(h)
        return h, outs

    @staticmethod
    def _scatter_grids(tokens: torch.Tensor, coord: torch.Tensor,
                       valid: Optional[torch.Tensor]) -> List[torch.Tensor]:
        grids = []
        for b in range(tokens.shape[0]):
            keep = valid[b].bool() if valid is not None else torch.ones_like(coord[b, :, 0], dtype=torch.bool)
            c, t = coord[b][keep], tokens[b][keep]
            gh, gw = int(c[:, 0].max()) + 1, int(c[:, 1].max()) + 1
            g = t.new_zeros(gh * gw, t.shape[-1])
            g[c[:, 0] * gw + c[:, 1]] = t
            grids.append(g.reshape(gh, gw, -1).permute(2, 0, 1))
        return grids

    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
        """Resample the patch projection to the model's patch size (position tables are resampled
        at run time, so any stored grid loads)."""
        out: Dict[str, torch.Tensor] = {}
        own = model.state_dict()
        for k, v in state_dict.items():
            if k == "embeds.proj.weight" and k in own and v.shape != own[k].shape:
                e = model.embeds
                old = int(round((v.shape[1] / e.in_chans) ** 0.5))
                w = v.reshape(v.shape[0], old, old, e.in_chans).permute(0, 3, 1, 2)
                v = resample_patch_embed(w, e.patch_size).permute(0, 2, 3, 1).reshape(v.shape[0], -1)
            out[k] = v
        return out


# --------------------------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------------------------

_base = Variant(NaFlexVit, embed_dim=768, depth=12, num_heads=12, init_values=1e-5, reg_tokens=4,
                global_pool="avg")
_so150m2 = Variant(NaFlexVit, embed_dim=832, depth=21, num_heads=13, mlp_ratio=34 / 13, qkv_bias=False,
                   init_values=1e-5, reg_tokens=1)
_siglip = Variant(NaFlexVit, embed_dim=768, depth=12, num_heads=12, global_pool="map", act_layer="gelu_tanh",
                  pos_embed_interp_mode="bilinear")
_radio = Variant(NaFlexVit, img_size=512, class_token=True, reg_tokens=7, global_pool="token", final_norm=False,
                 pos_embed_grid_size=(128, 128), pos_embed_ar_preserving=True, pos_embed_interp_mode="bilinear",
                 pos_embed_align_corners=True)

VARIANTS: Dict[str, Variant] = {
    "naflexvit_base_patch16_gap": _base,
    "naflexvit_base_patch16_par_gap": _base.but(pos_embed_ar_preserving=True),
    "naflexvit_base_patch16_parfac_gap": _base.but(pos_embed_ar_preserving=True, pos_embed="factorized",
                                                   pos_embed_interp_mode="bilinear"),
    "naflexvit_base_patch16_map": _base.but(reg_tokens=1, global_pool="map"),
    "naflexvit_so150m2_patch16_reg1_gap": _so150m2.but(global_pool="avg"),
    "naflexvit_so150m2_patch16_reg1_map": _so150m2.but(global_pool="map"),
    "naflexvit_base_patch16_siglip": _siglip,
    "naflexvit_so400m_patch16_siglip": _siglip.but(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=4304 / 1152),
    "naflexvit_base_patch16_radio_v3": _radio.but(init_values=1e-5),
    "naflexvit_large_patch16_radio_v3": _radio.but(embed_dim=1024, depth=24, num_heads=16, init_values=1e-5),
    "naflexvit_huge_patch16_radio_v3": _radio.but(embed_dim=1280, depth=32, num_heads=16),
    "naflexvit_huge_patch16_radio_v4": _radio.but(embed_dim=1280, depth=32, num_heads=16, reg_tokens=9),
    "naflexvit_so400m_patch16_radio_v4": _radio.but(embed_dim=1152, depth=27, num_heads=16, mlp_ratio=4304 / 1152,
                                                    reg_tokens=9),
    "naflexvit_giant_patch16_radio_v3": _radio.but(embed_dim=1536, depth=40, num_heads=24),
}
register_family("naflexvit", VARIANTS)
