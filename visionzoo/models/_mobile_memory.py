"""Training-memory remedies for the mobile-block family (placeholder)."""
from __future__ import annotations

import torch.nn as nn


def apply_memory_efficient(model: nn.Module) -> None:
    raise NotImplementedError
