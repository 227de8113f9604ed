"""Per-step learning-rate schedules with warmup: one-cycle, cosine, step, constant.

The schedule is a pure function of the global step, so resuming only needs the step counter.
Each parameter group's ``lr_scale`` (layer decay) multiplies the scheduled value.
"""
from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer

__all__ = ["Scheduler", "SCHEDULES"]

SCHEDULES = ("onecycle", "cosine", "step", "const")


class Scheduler:
    """``lr(step)``: linear warmup from ``warmup_lr_factor * lr`` to ``lr``, then the decay.

    Args:
        optimizer: its groups' ``lr`` are set on every :meth:`step`.
        base_lr: peak learning rate.
        total_steps: number of optimizer steps in the whole run.
        steps_per_epoch: used to convert epoch-based ``decay_epochs``.
        kind: ``onecycle`` (Smith's one-cycle: a half-cosine rise over the warmup, then a
            half-cosine fall to ``min_lr``; suits short runs), ``cosine`` (linear warmup, cosine to
            ``min_lr`` at the end), ``step`` (× ``decay_rate`` every ``decay_epochs``) or ``const``.
        warmup_steps: length of the warmup.
    """

    def __init__(self, optimizer: Optimizer, base_lr: float, total_steps: int, steps_per_epoch: int,
                 kind: str = "cosine", warmup_steps: int = 0, warmup_lr_factor: float = 0.01,
                 min_lr: float = 0.0, decay_epochs: float = 30.0, decay_rate: float = 0.1) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
        if total_steps < 1:
            raise ValueError("the schedule needs at least one step")
        self.optimizer = optimizer
        self.base_lr, self.total_steps, self.steps_per_epoch = base_lr, total_steps, max(1, steps_per_epoch)
        self.kind, self.warmup_steps, self.warmup_lr_factor = kind, max(0, warmup_steps), warmup_lr_factor
        self.min_lr, self.decay_epochs, self.decay_rate = min_lr, decay_epochs, decay_rate
        self.last_step = 0
        self._apply(self.lr_at(0))

    def lr_at(self, step: int) -> float:
        """Scheduled learning rate at a global step (before ``lr_scale``)."""
        if step < self.warmup_steps and self.kind == "onecycle":
            start = self.base_lr * self.warmup_lr_factor
            return start + (self.base_lr - start) * 0.5 * (1 - math.cos(math.pi * step / self.warmup_steps))
        if step < self.warmup_steps:
            start = self.base_lr * self.warmup_lr_factor
            return start + (self.base_lr - start) * step / self.warmup_steps
        if self.kind == "const":
            return self.base_lr
        if self.kind == "step":
            n = int((step / self.steps_per_epoch) // max(self.decay_epochs, 1e-8))
            return max(self.min_lr, self.base_lr * self.decay_rate ** n)
        span = max(1, self.total_steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t))

    def _apply(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self, step: int | None = None) -> float:
        """Set the learning rate for global ``step`` (default: the next one) and return it."""
        self.last_step = self.last_step + 1 if step is None else step
        lr = self.lr_at(self.last_step)
        self._apply(lr)
        return lr

    def get_last_lr(self) -> float:
        return self.lr_at(self.last_step)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step counter; the schedule's shape comes from the current arguments."""
        self.last_step = int(state["last_step"])
        self._apply(self.lr_at(self.last_step))
