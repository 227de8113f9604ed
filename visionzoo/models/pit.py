"""PiT: Pooling-based Vision Transformer.

Paper: Heo et al., 2021, "Rethinking Spatial Dimensions of Vision Transformers",
https://arxiv.org/abs/2103.16302

A ViT with a CNN's shape: three stages whose token grid halves and width doubles between them.
The patch embedding is an overlapping strided conv (e.g. 16x16, stride 8) with a learned 2-D
position embedding added to its map. Between stages a pooling layer shrinks the grid with a
stride-2 depthwise conv (channel multiplier 2) and widens the class (and, for the distilled
models, distillation) tokens with a linear layer; inside a stage the tokens and the flattened
grid go through ordinary pre-norm transformer blocks. The head reads the normed class token
(distilled models: the mean of the class- and distillation-token heads, as in DeiT).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.weight_init import init_weights_vit_style, trunc_normal_
from .base import FeatureMixin, Variant, register_family
from .deit import VisionTransformerDistilled
from .vision_transformer import Block

__all__ = ["PoolingVisionTransformer", "PoolingVisionTransformerDistilled", "ConvHeadPooling", "PitStage",
           "VARIANTS"]

Tokens = tuple[torch.Tensor, torch.Tensor]  # (NCHW patch map, [B, T, C] class/distillation tokens)


class ConvEmbedding(nn.Module):
    """Overlapping patch embedding: one strided conv, output kept as an NCHW map."""

    def __init__(self, in_chans: int, out_chs: int, patch_size: int, stride: int, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chs, kernel_size=patch_size, stride=stride, padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvHeadPooling(nn.Module):
    """Stage transition: stride-``s`` depthwise conv (kernel ``s + 1``, channel multiplier
    ``out/in``) on the map, a linear layer on the prefix tokens."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=stride + 1, padding=stride // 2, stride=stride,
                              groups=in_chs)
        self.fc = nn.Linear(in_chs, out_chs)

    def forward(self, x: torch.Tensor, cls_tokens: torch.Tensor) -> Tokens:
        return self.conv(x), self.fc(cls_tokens)


class PitStage(nn.Module):
    """Optional pooling, then transformer blocks over ``[prefix tokens, flattened map]``.

    Takes and returns ``(map, prefix tokens)``; the map is what the stage's feature level is.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 pool: bool = False, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: Sequence[float] = ()) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.pool = ConvHeadPooling(in_dim, dim) if pool else None
        dpr = list(drop_path) or [0.0] * depth
        self.blocks = nn.Sequential(*[
            Block(dim, num_heads, mlp_ratio, qkv_bias=True, proj_drop=proj_drop, attn_drop=attn_drop,
                  drop_path=dpr[i], norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for i in range(depth)])

    def forward(self, x: Tokens) -> Tokens:
        x_map, cls_tokens = x
        if self.pool is not None:
            x_map, cls_tokens = self.pool(x_map, cls_tokens)
        b, c, h, w = x_map.shape
        t = cls_tokens.shape[1]
        seq = torch.cat([cls_tokens, x_map.flatten(2).transpose(1, 2)], dim=1)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            seq = checkpoint_seq(self.blocks, seq)
        else:
            seq = self.blocks(seq)
        return seq[:, t:].transpose(1, 2).reshape(b, c, h, w), seq[:, :t]


class PoolingVisionTransformer(FeatureMixin, nn.Module):
    """PiT: conv patch embedding + 2-D position embedding, three :class:`PitStage` stages (grid
    halved, width ``base_dim * heads`` per stage), final norm on the class token, linear head.

    ``img_size`` fixes the position embedding's grid; build at another size and pretrained
    weights are resampled by :meth:`checkpoint_filter_fn`.
    """
    feature_cfg = {"feature_cls": "hook", "no_rewrite": True}  # the reference nests the model as ``body``
    _num_tokens = 1

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, stride: int = 8,
                 base_dims: Sequence[int] = (48, 48, 48), depth: Sequence[int] = (2, 6, 4),
                 heads: Sequence[int] = (2, 4, 8), mlp_ratio: float = 4.0, num_classes: int = 1000,
                 in_chans: int = 3, global_pool: str = "token", drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if global_pool not in ("token", ""):
            raise ValueError(f"PiT pools the class token: global_pool must be 'token' or '', got {global_pool!r}")
        self.num_classes, self.global_pool, self.grad_checkpointing = num_classes, global_pool, False
        dims = [b * h for b, h in zip(base_dims, heads)]
        self.num_features = self.head_hidden_size = self.embed_dim = dims[-1]
        width = (img_size - patch_size) // stride + 1
        self.img_size = img_size
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], width, width))
        self.cls_token = nn.Parameter(torch.zeros(1, self._num_tokens, dims[0]))
        self.patch_embed = ConvEmbedding(in_chans, dims[0], patch_size, stride)
        self.pos_drop = nn.Dropout(pos_drop_rate)
        total = sum(depth)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, start = [], 0
        for i, d in enumerate(depth):
            stages.append(PitStage(dims[max(i - 1, 0)], dims[i], d, heads[i], mlp_ratio, pool=i > 0,
                                   proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[start:start + d]))
            start += d
        self.transformers = nn.ModuleList(stages)  # not a Sequential: the stages pass (map, tokens) pairs
        self.feature_info = [dict(num_chs=dims[i], reduction=stride * 2 ** i, module=f"transformers.{i}")
                             for i in range(len(depth))]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Truncated-normal(0.02) linears, position embedding and tokens; zero biases."""
        self.apply(init_weights_vit_style)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("token", ""):
                raise ValueError(f"global_pool must be 'token' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> Tokens:
        x = self.pos_drop(self.patch_embed(x) + self.pos_embed)
        return x, self.cls_token.expand(x.shape[0], -1, -1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normed prefix tokens ``[B, T, C]`` (T = 1, or 2 with a distillation token)."""
        xt = self._embed(x)
        for stage in self.transformers:
            xt = stage(xt)
        return self.norm(xt[1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- FeatureMixin hooks: the trunk carries (map, prefix tokens); each stage is a level ----
    _stem_level = False
    _output_fmts = ("NCHW", "NHWC")

    def _forward_stem(self, x: torch.Tensor) -> tuple[Any, Optional[torch.Tensor]]:
        return self._embed(x), None

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.transformers)

    def _final(self, x: Any) -> torch.Tensor:
        return self.norm(x[1])

    def _level_output(self, x: Any, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        return super()._level_output(x[0], is_last, norm, output_fmt, in_size)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.transformers = self.transformers[:num_stages]
        if prune_norm:
            self.norm = nn.Identity()

    # ---- checkpoint adaptation ------------------------------------------------------------
    @staticmethod
    def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        """Resample the 2-D position embedding (bicubic) to the model's grid."""
        out = dict(state_dict)
        pos = out.get("pos_embed")
        if pos is not None and pos.shape != model.pos_embed.shape:
            out["pos_embed"] = F.interpolate(pos.float(), size=model.pos_embed.shape[-2:], mode="bicubic",
                                             align_corners=False).to(pos.dtype)
        return out


class PoolingVisionTransformerDistilled(PoolingVisionTransformer):
    """PiT with a distillation token beside the class token and its own head (``head_dist``);
    the head behaves as DeiT's distilled models' (mean of the two heads; both in distilled
    training, see ``set_distilled_training``)."""
    _num_tokens = 2

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("global_pool", "token") != "token":
            raise ValueError("distilled models pool the class and distillation tokens: global_pool must be 'token'")
        super().__init__(**kwargs)
        self.head_dist = nn.Linear(self.embed_dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.distilled_training = False
        init_weights_vit_style(self.head_dist)

    # DeiT's distilled head, unchanged: the prefix tokens are [class, distillation] here too
    set_distilled_training = VisionTransformerDistilled.set_distilled_training
    reset_classifier = VisionTransformerDistilled.reset_classifier
    forward_head = VisionTransformerDistilled.forward_head


def _pit(patch_size: int, stride: int, base_dim: int, depth: Sequence[int], heads: Sequence[int]) -> Variant:
    return Variant(PoolingVisionTransformer, patch_size=patch_size, stride=stride, base_dims=(base_dim,) * 3,
                   depth=tuple(depth), heads=tuple(heads), mlp_ratio=4.0)


_SIZES = {
    "b": _pit(14, 7, 64, (3, 6, 4), (4, 8, 16)),
    "s": _pit(16, 8, 48, (2, 6, 4), (3, 6, 12)),
    "xs": _pit(16, 8, 48, (2, 6, 4), (2, 4, 8)),
    "ti": _pit(16, 8, 32, (2, 6, 4), (2, 4, 8)),
}
VARIANTS: dict[str, Variant] = {}
for _size, _v in _SIZES.items():
    VARIANTS[f"pit_{_size}_224"] = _v
    VARIANTS[f"pit_{_size}_distilled_224"] = _v.but(model_cls=PoolingVisionTransformerDistilled)
register_family("pit", VARIANTS)
