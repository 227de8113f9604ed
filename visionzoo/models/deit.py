"""DeiT and DeiT III: data-efficient ViTs, with the distillation token of DeiT.

Papers:
    * DeiT: Touvron et al., 2021, "Training data-efficient image transformers & distillation
      through attention", https://arxiv.org/abs/2012.12877
    * DeiT III: Touvron et al., 2022, "DeiT III: Revenge of the ViT", https://arxiv.org/abs/2204.07118

Plain DeiT/DeiT III models are :class:`~visionzoo.models.vision_transformer.VisionTransformer`
configurations; the distilled models add a distillation token with its own head
(:class:`VisionTransformerDistilled`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..layers.weight_init import trunc_normal_
from .base import Variant, register_family
from .vision_transformer import BASE, HUGE, LARGE, MEDIUM, SMALL, TINY, VisionTransformer, _v

__all__ = ["VisionTransformerDistilled", "VARIANTS"]


class VisionTransformerDistilled(VisionTransformer):
    """ViT with a class token and a distillation token, each with its own linear head.

    The distillation token is trained to match a teacher's predictions. In eval mode (and in
    training unless ``set_distilled_training(True)``) the logits are the average of the two heads,
    as in DeiT; with distilled training enabled, training-mode ``forward`` returns both.
    """
    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}  # features_only wrapper (visionzoo.features)

    def __init__(self, *, weight_init: str = "", **kwargs: Any) -> None:
        if kwargs.get("global_pool", "token") != "token":
            raise ValueError("distilled models pool the class and distillation tokens: global_pool must be 'token'")
        if not kwargs.get("class_token", True):
            raise ValueError("distilled models need class_token=True")
        super().__init__(weight_init="skip", **kwargs)
        self.num_prefix_tokens += 1
        self.dist_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        if self.pos_embed is not None:
            num_patches = self.patch_embed.num_patches
            embed_len = num_patches if self.no_embed_class else num_patches + self.num_prefix_tokens
            # re-assigning keeps pos_embed's place in the state_dict (before dist_token)
            self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, self.embed_dim),
                                          requires_grad=self.pos_embed_type == "learn")
        if isinstance(self.patch_drop, nn.Module) and hasattr(self.patch_drop, "num_prefix_tokens"):
            self.patch_drop.num_prefix_tokens = self.num_prefix_tokens
        num_classes = self.num_classes
        self.head_dist = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.distilled_training = False
        if weight_init != "skip":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        trunc_normal_(self.dist_token, std=0.02)

    def set_distilled_training(self, enable: bool = True) -> None:
        """Return ``(class_logits, dist_logits)`` from training-mode forward (for a distillation loss)."""
        self.distilled_training = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "token", ""):
            raise ValueError("distilled models support global_pool 'token' only")
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_dist = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _prefix_tokens(self, b: int) -> list[torch.Tensor]:
        toks = [self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1)]
        if self.reg_token is not None:
            toks.append(self.reg_token.expand(b, -1, -1))
        return toks

    # annotated as returning a tensor, which is what TorchScript compiles (the distilled-training
    # tuple is eager-only: that branch is not compiled); in eager distilled training it is
    # ``(class_logits, dist_logits)``
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x, x_dist = x[:, 0], x[:, 1]
        if pre_logits:
            return (x + x_dist) / 2
        x, x_dist = self.head(self.head_drop(x)), self.head_dist(self.head_drop(x_dist))
        if self.distilled_training and self.training and not torch.jit.is_scripting():
            return x, x_dist  # type: ignore[return-value]
        return (x + x_dist) / 2


_DEIT3 = dict(no_embed_class=True, init_values=1e-6)

def _dv(*parts: dict[str, Any], distilled: bool = False, **kw: Any) -> Variant:
    variant = _v(*parts, **kw)
    return variant.but(model_cls=VisionTransformerDistilled) if distilled else variant


VARIANTS: dict[str, Variant] = {
    "deit_tiny_patch16_224": _dv(TINY),
    "deit_small_patch16_224": _dv(SMALL),
    "deit_base_patch16_224": _dv(BASE),
    "deit_base_patch16_384": _dv(BASE, img_size=384),
    "deit_tiny_distilled_patch16_224": _dv(TINY, distilled=True),
    "deit_small_distilled_patch16_224": _dv(SMALL, distilled=True),
    "deit_base_distilled_patch16_224": _dv(BASE, distilled=True),
    "deit_base_distilled_patch16_384": _dv(BASE, img_size=384, distilled=True),
    "deit3_small_patch16_224": _dv(SMALL, _DEIT3),
    "deit3_small_patch16_384": _dv(SMALL, _DEIT3, img_size=384),
    "deit3_medium_patch16_224": _dv(MEDIUM, _DEIT3),
    "deit3_base_patch16_224": _dv(BASE, _DEIT3),
    "deit3_base_patch16_384": _dv(BASE, _DEIT3, img_size=384),
    "deit3_large_patch16_224": _dv(LARGE, _DEIT3),
    "deit3_large_patch16_384": _dv(LARGE, _DEIT3, img_size=384),
    "deit3_huge_patch14_224": _dv(HUGE, _DEIT3, patch_size=14),
}


register_family("deit", VARIANTS)
