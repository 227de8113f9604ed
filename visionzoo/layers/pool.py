"""Global pooling (``avg|max|avgmax|catavgmax|''``) and classifier heads."""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from .activations import LayerType, get_act_layer
from .norm import get_norm_layer

__all__ = ["SelectAdaptivePool2d", "ClassifierHead", "NormMlpClassifierHead", "create_classifier",
           "pool_feat_mult", "POOL_TYPES", "pool_tokens"]

POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


def pool_feat_mult(pool_type: str) -> int:
    """``catavgmax`` concatenates two pools and doubles the feature width."""
    return 2 if pool_type == "catavgmax" else 1


class SelectAdaptivePool2d(nn.Module):
    """Global pooling chosen by name; ``''`` keeps the map (no pooling, no flatten)."""

    def __init__(self, pool_type: str = "avg", flatten: bool = False, input_fmt: str = "NCHW") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"unknown global_pool {pool_type!r}; choose one of {POOL_TYPES}")
        self.pool_type = pool_type or ""
        self.flatten = bool(flatten and pool_type)
        self.input_fmt = input_fmt

    def is_identity(self) -> bool:
        return not self.pool_type

    def feat_mult(self) -> int:
        return pool_feat_mult(self.pool_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_type:
            return x
        dims = (1, 2) if self.input_fmt == "NHWC" else (2, 3)
        keep = not self.flatten
        if self.pool_type == "avg":
            x = x.mean(dims, keepdim=keep)
        elif self.pool_type == "max":
            x = x.amax(dims, keepdim=keep)
        else:
            avg, mx = x.mean(dims, keepdim=keep), x.amax(dims, keepdim=keep)
            x = 0.5 * (avg + mx) if self.pool_type == "avgmax" else torch.cat((avg, mx), dim=1 if self.input_fmt != "NHWC" or not keep else -1)
        return x

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}, flatten={self.flatten}"


def create_classifier(num_features: int, num_classes: int, pool_type: str = "avg",
                      use_conv: bool = False, drop_rate: float = 0.0) -> tuple[nn.Module, nn.Module]:
    """A (global_pool, fc) pair; ``num_classes=0`` gives an ``nn.Identity`` classifier."""
    flatten = not use_conv
    if not pool_type and not use_conv:
        flatten = False
    global_pool = SelectAdaptivePool2d(pool_type, flatten=flatten)
    in_features = num_features * global_pool.feat_mult()
    if num_classes <= 0:
        fc: nn.Module = nn.Identity()
    elif use_conv:
        fc = nn.Conv2d(in_features, num_classes, 1, bias=True)
    else:
        fc = nn.Linear(in_features, num_classes)
    return global_pool, fc


class ClassifierHead(nn.Module):
    """Global pool -> dropout -> fc, with ``pre_logits`` returning the pooled features."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = "avg", drop_rate: float = 0.0,
                 use_conv: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self.use_conv = use_conv
        self.global_pool, self.fc = create_classifier(in_features, num_classes, pool_type, use_conv=use_conv)
        self.drop = nn.Dropout(drop_rate)
        self.flatten = nn.Flatten(1) if use_conv and pool_type else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is None:
            pool_type = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.in_features, num_classes, pool_type, use_conv=self.use_conv)
        self.flatten = nn.Flatten(1) if self.use_conv and pool_type else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.drop(x)
        if pre_logits:
            return self.flatten(x)
        return self.flatten(self.fc(x))


class NormMlpClassifierHead(nn.Module):
    """Pool -> norm -> optional hidden layer (``pre_logits.fc``) -> fc, as in ConvNeXt."""

    def __init__(self, in_features: int, num_classes: int, hidden_size: int | None = None, pool_type: str = "avg",
                 drop_rate: float = 0.0, norm_layer: LayerType = "layernorm2d", act_layer: LayerType = "tanh") -> None:
        super().__init__()
        # module registration order is the checkpoint's key order: pool, norm, flatten, pre_logits, drop, fc
        self.in_features, self.hidden_size = in_features, hidden_size
        self.num_features = hidden_size or in_features
        self._set_pool(pool_type)
        self.norm = get_norm_layer(norm_layer)(in_features)
        self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
        self.pre_logits = nn.Identity()
        if hidden_size:  # a tanh "representation" layer (ViT-style) between the norm and the classifier
            self.pre_logits = nn.Sequential(OrderedDict(fc=self._hidden_layer(), act=get_act_layer(act_layer)()))
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._make_fc(num_classes)

    def _set_pool(self, pool_type: str) -> None:
        # without pooling the head runs on maps, so its linear layers become 1x1 convs
        self.global_pool = SelectAdaptivePool2d(pool_type)
        self.use_conv = not pool_type

    def _hidden_layer(self, **factory_kw) -> nn.Module:
        if self.use_conv:
            return nn.Conv2d(self.in_features, self.hidden_size, 1, **factory_kw)
        return nn.Linear(self.in_features, self.hidden_size, **factory_kw)

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        if self.use_conv:
            return nn.Conv2d(self.num_features, num_classes, 1)
        return nn.Linear(self.num_features, num_classes)

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self._set_pool(pool_type)
            self.flatten = nn.Flatten(1) if pool_type else nn.Identity()
            fc = getattr(self.pre_logits, "fc", None)
            if fc is not None and isinstance(fc, nn.Conv2d) != self.use_conv:
                # same weights, reshaped between a linear layer and a 1x1 conv
                new = self._hidden_layer(device=fc.weight.device, dtype=fc.weight.dtype)
                with torch.no_grad():
                    new.weight.copy_(fc.weight.reshape(new.weight.shape))
                    new.bias.copy_(fc.bias)
                self.pre_logits.fc = new
        self.fc = self._make_fc(num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.norm(x)
        x = self.flatten(x)
        x = self.pre_logits(x)
        x = self.drop(x)
        if pre_logits:
            return x
        return self.fc(x)


def pool_tokens(x: torch.Tensor, pool_type: str, num_prefix_tokens: int = 1,
                include_prefix: bool = False) -> torch.Tensor:
    """Reduce a ``[B, N, C]`` token sequence to ``[B, C]``.

    ``'token'`` reads the first (class) token; ``'avg'``/``'max'``/``'avgmax'`` reduce over the patch
    tokens (the prefix too with ``include_prefix``); ``''`` keeps the sequence. Attention pooling
    (``'map'``) needs the model's own head, so the model handles it before calling this."""
    if pool_type == "token":
        return x[:, 0]
    if not pool_type:
        return x
    tokens = x if include_prefix else x[:, num_prefix_tokens:]
    if pool_type == "avg":
        return tokens.mean(dim=1)
    if pool_type == "max":
        return tokens.amax(dim=1)
    if pool_type == "avgmax":
        return 0.5 * (tokens.mean(dim=1) + tokens.amax(dim=1))
    if pool_type == "map":
        raise ValueError("this model has no attention-pool head")
    raise ValueError("unknown token pool " + pool_type + "; use token, avg, max, avgmax, map or ''")
