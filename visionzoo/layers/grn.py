"""Global Response Normalization (ConvNeXt V2, Woo et al., 2023) and the MLP that uses it."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from .activations import LayerType, get_act_layer
from .helpers import to_2tuple

__all__ = ["GlobalResponseNorm", "GlobalResponseNormMlp"]


class GlobalResponseNorm(nn.Module):
    """GRN: ``x + bias + weight * x * N(x)`` with ``N(x) = G(x) / (mean_c G(x) + eps)``.

    ``G(x)`` is the per-channel L2 norm over the spatial dims: channels compete through the
    divisive normalisation, which counters feature collapse in masked-autoencoder training.
    ``channels_last`` selects NHWC (``True``) or NCHW input.
    """

    def __init__(self, dim: int, eps: float = 1e-6, channels_last: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.channels_last = channels_last
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            spatial, chan, shape = (1, 2), -1, (1, 1, 1, -1)
        else:
            spatial, chan, shape = (2, 3), 1, (1, -1, 1, 1)
        g = torch.linalg.vector_norm(x, ord=2, dim=spatial, keepdim=True)
        n = g / (g.mean(dim=chan, keepdim=True) + self.eps)
        return x + self.bias.reshape(shape) + self.weight.reshape(shape) * (x * n)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, channels_last={self.channels_last}"


class GlobalResponseNormMlp(nn.Module):
    """``fc1 -> act -> drop -> GRN -> fc2 -> drop``; ``use_conv`` runs on NCHW with 1x1 convs."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: LayerType = nn.GELU, bias: bool | tuple = True, drop: float | tuple = 0.0,
                 use_conv: bool = False) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        bias, drop = to_2tuple(bias), to_2tuple(drop)
        linear = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        self.fc1 = linear(in_features, hidden_features, bias=bias[0])
        self.act = get_act_layer(act_layer)()
        self.drop1 = nn.Dropout(drop[0])
        self.grn = GlobalResponseNorm(hidden_features, channels_last=not use_conv)
        self.fc2 = linear(hidden_features, out_features, bias=bias[1])
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(self.grn(x)))
