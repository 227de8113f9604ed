"""Weight initialisers that work on the meta device (no data-dependent steps)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["trunc_normal_", "variance_scaling_", "init_weights_vit_style"]


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


def variance_scaling_(tensor: torch.Tensor, scale: float = 1.0, mode: str = "fan_in",
                      distribution: str = "normal") -> torch.Tensor:
    """JAX/TF ``variance_scaling`` initialiser."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    denom = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    variance = scale / denom
    if distribution == "truncated_normal":
        return nn.init.trunc_normal_(tensor, std=math.sqrt(variance) / 0.87962566103423978)
    if distribution == "normal":
        return nn.init.normal_(tensor, std=math.sqrt(variance))
    bound = math.sqrt(3 * variance)
    return nn.init.uniform_(tensor, -bound, bound)


def init_weights_vit_style(module: nn.Module) -> None:
    """Truncated-normal(0.02) linear weights, zero biases: the usual transformer init."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
