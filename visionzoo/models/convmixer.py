"""ConvMixer ("Patches Are All You Need?", Trockman & Kolter 2022).

A patch embedding (a strided conv with kernel = stride = patch size) followed by ``depth`` identical
blocks at one resolution: a residual depthwise conv (spatial mixing) then a pointwise conv
(channel mixing), each followed by the activation and BatchNorm (act before norm, as the paper).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.activations import get_act_layer
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["ConvMixer"]


class _Residual(nn.Module):
    """``x + fn(x)``; the branch is held as ``fn`` (checkpoint layout)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


def _conv_act_bn(cin: int, cout: int, kernel: int, act: type, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    pad = 0 if stride > 1 else kernel // 2
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, groups=groups), act(), nn.BatchNorm2d(cout)]


class ConvMixer(FeatureMixin, ModelForwardMixin, nn.Module):
    """Isotropic conv network on patches; every block's output is one feature level (all at the
    patch stride)."""

    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}
    _stem_level = False

    def __init__(self, *, dim: int = 768, depth: int = 32, kernel_size: int = 9, patch_size: int = 7,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 act_layer="gelu", drop_path_rate: float = 0.0) -> None:
        super().__init__()
        act = get_act_layer(act_layer)
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.num_features = self.head_hidden_size = dim
        self.stem = nn.Sequential(*_conv_act_bn(in_chans, dim, patch_size, act, stride=patch_size))
        self.blocks = nn.Sequential(*[
            nn.Sequential(_Residual(nn.Sequential(*_conv_act_bn(dim, dim, kernel_size, act, groups=dim))),
                          *_conv_act_bn(dim, dim, 1, act))
            for _ in range(depth)])
        self.feature_info = [dict(num_chs=dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.pooling = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.pooling = SelectAdaptivePool2d(global_pool, flatten=True)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.pooling(x))
        return x if pre_logits else self.head(x)

    # FeatureMixin hooks: the trunk is the blocks

    def _feature_stages(self) -> list[nn.Module]:
        return list(self.blocks)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.blocks = self.blocks[:num_stages]


_base = Variant(ConvMixer, dim=768, depth=32, kernel_size=7, patch_size=7, act_layer="relu")
VARIANTS: dict[str, Variant] = {
    "convmixer_1536_20": Variant(ConvMixer, dim=1536, depth=20, kernel_size=9, patch_size=7),
    "convmixer_768_32": _base,
    "convmixer_1024_20_ks9_p14": Variant(ConvMixer, dim=1024, depth=20, kernel_size=9, patch_size=14),
}
register_family("convmixer", VARIANTS)
