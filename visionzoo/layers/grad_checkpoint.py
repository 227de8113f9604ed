"""Activation checkpointing over a sequence of modules (trade compute for training memory)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_seq", "checkpoint_module"]


def checkpoint_module(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """Run ``module`` without storing its activations; they are recomputed in backward."""
    return checkpoint(module, *args, use_reentrant=False)


def checkpoint_seq(modules: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Apply modules in order, checkpointing each one."""
    for m in modules:
        x = checkpoint(m, x, use_reentrant=False)
    return x
