"""Normalisation layers: channels-first LayerNorm, RMSNorm, GroupNorm(1), and a name -> layer factory."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import LayerType

__all__ = ["LayerNorm2d", "LayerNorm", "RmsNorm", "RmsNorm2d", "SimpleNorm", "SimpleNorm2d", "GroupNorm", "GroupNorm1", "bind_norm", "get_norm_layer"]


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last dim (channels-last), eps 1e-6 by default as in ConvNeXt/ViT."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, **kwargs) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, **kwargs)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of an NCHW tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, **kwargs) -> None:
        super().__init__(num_channels, eps=eps, elementwise_affine=affine, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RmsNorm(nn.Module):
    """RMSNorm over the last dim (Zhang & Sennrich, 2019): ``x / sqrt(mean(x^2) + eps) * weight``."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, **kwargs) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None

    def _norm(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=dim, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._norm(x, -1)
        return x * self.weight if self.weight is not None else x

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


class RmsNorm2d(RmsNorm):
    """RMSNorm over the channel dim of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._norm(x, 1)
        return x * self.weight.reshape(1, -1, 1, 1) if self.weight is not None else x


class SimpleNorm(RmsNorm):
    """Scale-only norm over the last dim: ``x / sqrt(var(x) + eps) * weight`` (no centering).

    ``var`` is the unbiased (Bessel-corrected) variance, as in the published ConvNeXt-zepto weights.
    """

    def _norm(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x * torch.rsqrt(x.var(dim=dim, keepdim=True) + self.eps)


class SimpleNorm2d(SimpleNorm):
    """:class:`SimpleNorm` over the channel dim of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._norm(x, 1)
        return x * self.weight.reshape(1, -1, 1, 1) if self.weight is not None else x


class GroupNorm(nn.GroupNorm):
    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group: LayerNorm over C, H, W (PoolFormer-style)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, **kwargs) -> None:
        super().__init__(1, num_channels, eps=eps, affine=affine)


_NORMS: dict[str, Callable[..., nn.Module]] = {
    "batchnorm": nn.BatchNorm2d,
    "batchnorm2d": nn.BatchNorm2d,
    "batchnorm1d": nn.BatchNorm1d,
    "groupnorm": GroupNorm,
    "groupnorm1": GroupNorm1,
    "layernorm": LayerNorm,
    "layernorm2d": LayerNorm2d,
    "rmsnorm": RmsNorm,
    "rmsnorm2d": RmsNorm2d,
    "simplenorm": SimpleNorm,
    "simplenorm2d": SimpleNorm2d,
}


def bind_norm(cls: Callable[..., nn.Module], eps: float | None = None, group_size: int | None = None,
              **kwargs) -> Callable[..., nn.Module]:
    """``cls`` with its settings bound. ``group_size`` makes the group count follow the width
    (``channels // group_size`` groups, at least one), as RegNet-GN and mobile GN nets size theirs."""
    if eps is not None:
        kwargs["eps"] = eps
    if group_size:
        def grouped(num_channels: int, **kw) -> nn.Module:
            return cls(num_channels, num_groups=max(num_channels // group_size, 1), **{**kwargs, **kw})
        return grouped
    return partial(cls, **kwargs) if kwargs else cls


def get_norm_layer(norm: LayerType, eps: float | None = None, group_size: int | None = None,
                   **kwargs) -> Callable[..., nn.Module] | None:
    """The one norm resolver: a name (``'layernorm'``, ``'rmsnorm2d'``, ``'layernorm_nobias'``, ...),
    a class/factory, or ``None``. ``eps``, ``group_size`` (``'groupnorm'`` only; other norms ignore
    it) and other keyword arguments
    are bound into the returned factory (a given factory is returned unchanged, its own settings
    win). Norms with the activation inside resolve through ``norm_act.get_norm_act_layer``."""
    if norm is None or norm == "":
        return None
    if not isinstance(norm, str):
        return norm
    key = norm.lower().replace("_", "")
    if key == "layernormnobias":
        key, kwargs = "layernorm", {**kwargs, "bias": False}
    if key not in _NORMS:
        raise ValueError(f"unknown norm layer {norm!r}; known: {', '.join(sorted(_NORMS))}, layernorm_nobias")
    return bind_norm(_NORMS[key], eps=eps, group_size=group_size if key == "groupnorm" else None, **kwargs)
