"""Exponential moving average of model weights (evaluated alongside the trained model)."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

__all__ = ["ModelEma"]


class ModelEma(nn.Module):
    """Keeps ``ema = d * ema + (1 - d) * weights`` after every optimizer step.

    ``d = min(decay, (1 + n) / (10 + n))`` during the first updates (``warmup=True``) so early
    averages are not dominated by the random initialisation. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: bool = True,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        if device is not None:
            self.module.to(device)
        self.decay, self.warmup = decay, warmup
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        src = model.state_dict()
        for k, v in self.module.state_dict().items():
            s = src[k].detach().to(v.device)
            if v.dtype.is_floating_point:
                v.mul_(d).add_(s.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(s)
        self.num_updates += 1

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
