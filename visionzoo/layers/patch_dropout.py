"""Patch dropout (Liu et al., 2022, "PatchDropout: Economizing Vision Transformers Using Patch
Dropout", https://arxiv.org/abs/2208.07220): train on a random subset of the patch tokens."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

__all__ = ["PatchDropoutWithIndices"]


class PatchDropoutWithIndices(nn.Module):
    """Keep a random ``1 - prob`` of the patch tokens per sample while training.

    The first ``num_prefix_tokens`` (class/register) tokens are always kept. ``forward`` returns
    ``(tokens, keep)`` where ``keep`` (``[B, N']``, sorted) indexes the kept patch tokens, so
    per-token tables such as rotary embeddings can be gathered to match; ``keep`` is ``None``
    when nothing was dropped (eval mode or ``prob == 0``).
    """

    def __init__(self, prob: float = 0.0, num_prefix_tokens: int = 1, ordered: bool = True) -> None:
        super().__init__()
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"patch dropout prob must be in [0, 1), got {prob}")
        self.prob = prob
        self.num_prefix_tokens = num_prefix_tokens
        self.ordered = ordered

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not self.training or self.prob == 0.0:
            return x, None
        npt = self.num_prefix_tokens
        prefix, patches = x[:, :npt], x[:, npt:]
        b, n = patches.shape[:2]
        num_keep = max(1, int(n * (1.0 - self.prob)))
        keep = torch.argsort(torch.rand(b, n, device=x.device), dim=-1)[:, :num_keep]
        if self.ordered:
            keep = keep.sort(dim=-1).values
        patches = patches.gather(1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return torch.cat([prefix, patches], dim=1), keep
