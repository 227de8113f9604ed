"""Mixup / CutMix on batches, label smoothing, and the soft-target cross-entropy they need."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Mixup", "one_hot_smooth", "SoftTargetCrossEntropy"]


def one_hot_smooth(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class indices -> smoothed one-hot rows (``1 - s + s/K`` on the class, ``s/K`` elsewhere)."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device, dtype=torch.float32)
    return out.scatter_(1, target.view(-1, 1), 1.0 - smoothing + off)


class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against probability targets ``[B, K]``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class Mixup:
    """Per-batch Mixup (Zhang et al.) or CutMix (Yun et al.) with label smoothing.

    With probability ``prob`` a batch is mixed with its reverse; when both alphas are > 0,
    CutMix is chosen with probability ``switch_prob``. Randomness comes from NumPy's global
    generator, which the trainer seeds per epoch (so resumed runs replay the same mixes).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 0.0,
                 prob: float = 1.0, switch_prob: float = 0.5, label_smoothing: float = 0.1) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError("mixup/cutmix alpha must be ≥ 0")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("Mixup needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing

    def _cut_box(self, h: int, w: int, lam: float) -> tuple[int, int, int, int]:
        ratio = math.sqrt(1.0 - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        return int(y0), int(y1), int(x0), int(x1)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix ``x`` in place; return it and the ``[B, K]`` soft targets."""
        y = one_hot_smooth(target, self.num_classes, self.label_smoothing)
        if np.random.rand() >= self.prob:
            return x, y
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or np.random.rand() < self.switch_prob)
        if use_cutmix:
            lam = float(np.random.beta(self.cutmix_alpha, self.cutmix_alpha))
            h, w = x.shape[-2:]
            y0, y1, x0, x1 = self._cut_box(h, w, lam)
            x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)  # the area actually replaced
        else:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            x.mul_(lam).add_(x.flip(0).mul(1.0 - lam))
        return x, y * lam + y.flip(0) * (1.0 - lam)
