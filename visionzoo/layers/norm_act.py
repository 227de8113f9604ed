"""Normalisation layers with the activation fused in (one module, one state_dict prefix).

Pre-activation nets (ResNetV2/BiT) and EfficientNet-style checkpoints store e.g. ``norm1.weight``
for a "norm + act" unit, so the activation lives inside the norm module. Also the sample-wise
norm-activations that replace BN + ReLU: EvoNorm-S0 (Liu et al., 2020) and FRN + TLU (Singh &
Krishnan, 2019).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import LayerType, create_act_layer
from .norm import bind_norm

__all__ = ["BatchNormAct2d", "GroupNormAct", "LayerNormAct2d", "EvoNorm2dS0", "EvoNorm2dS0a", "FilterResponseNormTlu2d", "get_norm_act_layer"]


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d then activation; keys are the plain BatchNorm2d's."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 track_running_stats: bool = True, apply_act: bool = True, act_layer: LayerType = nn.ReLU,
                 act_kwargs: dict | None = None, inplace: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        self.act = create_act_layer(act_layer if apply_act else None, **(act_kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._batch_norm(x))

    def _batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        # nn.BatchNorm2d.forward written out: TorchScript cannot compile ``super().forward()``, so
        # subclasses call this (and ``self.act``) instead
        self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if keep_stats else None, self.running_var if keep_stats else None,
                            self.weight, self.bias, use_batch_stats, momentum, self.eps)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm (32 groups by default) then activation; keys are the plain GroupNorm's."""

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True,
                 apply_act: bool = True, act_layer: LayerType = nn.ReLU, act_kwargs: dict | None = None,
                 inplace: bool = True) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.act = create_act_layer(act_layer if apply_act else None, **(act_kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no ``super().forward()``: TorchScript cannot compile it
        return self.act(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class LayerNormAct2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, then an activation (keys of ``nn.LayerNorm``)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, apply_act: bool = True,
                 act_layer: LayerType = nn.ReLU, act_kwargs: dict | None = None, **_: object) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)
        self.act = create_act_layer(act_layer if apply_act else None, **(act_kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(x.permute(0, 3, 1, 2))


def _group_std(x: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    b, c, h, w = x.shape
    xg = x.reshape(b, groups, c // groups, h, w)
    var = xg.float().var(dim=(2, 3, 4), unbiased=False, keepdim=True)
    std = var.add(eps).sqrt().to(x.dtype)
    return std.expand(xg.shape).reshape(b, c, h, w)


class EvoNorm2dS0(nn.Module):
    """EvoNorm-S0: ``x * sigmoid(v * x) / group_std(x) * weight + bias``; batch-independent."""

    def __init__(self, num_features: int, groups: int = 32, group_size: int | None = None, apply_act: bool = True,
                 eps: float = 1e-5, **_: object) -> None:
        super().__init__()
        if group_size:
            if num_features % group_size:
                raise ValueError(f"{num_features} channels are not divisible into groups of {group_size}")
            groups = num_features // group_size
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        if self.v is not None:
            x = x * torch.sigmoid(x * self.v.view(shape)) / _group_std(x, self.groups, self.eps)
        return x * self.weight.view(shape) + self.bias.view(shape)


class EvoNorm2dS0a(EvoNorm2dS0):
    """EvoNorm-S0a: S0 that divides by the group std even without the activation (eps 1e-3)."""

    def __init__(self, num_features: int, groups: int = 32, group_size: int | None = None, apply_act: bool = True,
                 eps: float = 1e-3, **_: object) -> None:
        super().__init__(num_features, groups=groups, group_size=group_size, apply_act=apply_act, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        std = _group_std(x, self.groups, self.eps)
        if self.v is not None:
            x = x * torch.sigmoid(x * self.v.view(shape))
        return (x / std) * self.weight.view(shape) + self.bias.view(shape)


class FilterResponseNormTlu2d(nn.Module):
    """Filter Response Norm ``x / sqrt(mean_hw(x^2) + eps)``, affine, then TLU ``max(x, tau)``."""

    def __init__(self, num_features: int, apply_act: bool = True, eps: float = 1e-5, **_: object) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.tau = nn.Parameter(torch.zeros(num_features)) if apply_act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        nu2 = x.pow(2).mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(nu2 + self.eps)
        x = x * self.weight.view(shape) + self.bias.view(shape)
        return torch.maximum(x, self.tau.view(shape)) if self.tau is not None else x


_NORM_ACTS = {
    "batchnorm": BatchNormAct2d,
    "batchnorm2d": BatchNormAct2d,
    "groupnorm": GroupNormAct,
    "layernorm": LayerNormAct2d,
    "layernorm2d": LayerNormAct2d,
    "evonorms0": EvoNorm2dS0,
    "evonorms0a": EvoNorm2dS0a,
    "frn": FilterResponseNormTlu2d,
    "frntlu": FilterResponseNormTlu2d,
}


def get_norm_act_layer(norm_act: LayerType, eps: float | None = None, group_size: int | None = None,
                       **kwargs):
    """Resolve a norm+act layer by name (``'batchnorm'``, ``'groupnorm'``, ``'layernorm'``,
    ``'evonorms0'``, ``'frn'``) or class; ``eps``, ``group_size`` and other keyword arguments are bound
    as in ``norm.get_norm_layer`` (EvoNorm takes ``group_size`` itself)."""
    if norm_act is None or norm_act == "":
        return None
    if not isinstance(norm_act, str):
        return norm_act
    key = norm_act.lower().replace("_", "").replace("-", "")
    if key not in _NORM_ACTS:
        raise ValueError(f"unknown norm-act layer {norm_act!r}; known: {', '.join(sorted(_NORM_ACTS))}")
    cls = _NORM_ACTS[key]
    if key.startswith("evonorm"):  # sizes its own groups
        return partial(cls, **kwargs, **({"eps": eps} if eps is not None else {}), group_size=group_size)
    return bind_norm(cls, eps=eps, group_size=group_size, **kwargs)
