"""Activation layers by name, so model configs can say ``act_layer='hard_swish'``."""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["get_act_layer", "create_act_layer", "HardSigmoid", "HardSwish", "GELUTanh", "QuickGELU",
           "Swish", "Sigmoid", "Tanh", "LayerType"]

LayerType = Union[str, type, Callable[..., nn.Module], None]


class HardSigmoid(nn.Module):
    """``relu6(x + 3) / 6`` as in MobileNetV3 (same as ``nn.Hardsigmoid``)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardsigmoid(x)


class HardSwish(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(x)


class Swish(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class Sigmoid(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


class Tanh(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


class GELU(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x)


class GELUTanh(nn.Module):
    """GELU with the tanh approximation (used by some JAX-trained ViTs)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the OpenAI CLIP activation."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


_ACTS: dict[str, Callable[..., nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "celu": nn.CELU,
    "selu": nn.SELU,
    "prelu": nn.PReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "hard_sigmoid": HardSigmoid,
    "hardsigmoid": HardSigmoid,
    "hard_swish": HardSwish,
    "hardswish": HardSwish,
    "gelu": GELU,
    "gelu_tanh": GELUTanh,
    "quick_gelu": QuickGELU,
    "identity": nn.Identity,
}


def get_act_layer(name: LayerType) -> Callable[..., nn.Module] | None:
    """Resolve an activation given as a name, a class/factory, or ``None`` (no activation)."""
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        return name
    try:
        return _ACTS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(_ACTS))}") from None


def create_act_layer(name: LayerType, inplace: bool | None = None, **kwargs) -> nn.Module:
    """Instantiate an activation (``nn.Identity`` for ``None``); ``inplace`` is passed only to
    activations that have an in-place form."""
    layer = get_act_layer(name)
    if layer is None:
        return nn.Identity()
    if inplace is not None and _takes_inplace(layer):
        kwargs["inplace"] = inplace
    return layer(**kwargs)


@functools.lru_cache(maxsize=None)
def _takes_inplace(layer: Callable[..., nn.Module]) -> bool:
    try:
        return "inplace" in inspect.signature(layer).parameters
    except (TypeError, ValueError):
        return False
