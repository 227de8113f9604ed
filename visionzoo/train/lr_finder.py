"""Learning-rate range test (Smith, 2017, "Cyclical learning rates"; the ``lr_find`` of fastai).

A few dozen training steps with the learning rate growing exponentially from ``start_lr`` to
``end_lr``; the loss is smoothed and the test stops once it diverges. The suggested peak LR is
**one tenth of the LR at the smoothed-loss minimum** ("minimum / 10"): at the minimum the loss
already starts to blow up, a decade lower it still falls fast and steadily. The suggestion is
capped at the LR of steepest descent times 10, which guards against a noisy, flat minimum far to
the right. Weights, buffers (BatchNorm statistics), the optimizer state and the RNG state are
restored afterwards, so the test leaves the run exactly as it found it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

__all__ = ["LRFinderResult", "lr_range_test", "suggest_lr", "plot_lr_finder"]


@dataclass
class LRFinderResult:
    """The range test's curve and suggestion (``rule`` says how it was picked)."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float = float("nan")
    lr_min_loss: float = float("nan")
    lr_steepest: float = float("nan")
    diverged: bool = False
    rule: str = "min_loss/10, at most steepest*10"

    def to_dict(self) -> dict[str, Any]:
        return {"suggestion": self.suggestion, "lr_min_loss": self.lr_min_loss, "lr_steepest": self.lr_steepest,
                "rule": self.rule, "steps": len(self.lrs), "diverged": self.diverged,
                "start_lr": self.lrs[0] if self.lrs else None, "end_lr": self.lrs[-1] if self.lrs else None}


def suggest_lr(lrs: list[float], smoothed: list[float], skip_start: int = 5) -> tuple[float, float, float]:
    """(suggestion, lr at the smoothed-loss minimum, lr of steepest descent) of a range test curve."""
    n = len(lrs)
    if n < 3:
        raise ValueError("the range test needs at least 3 points")
    lo = min(skip_start, n - 3)
    i_min = min(range(lo, n), key=lambda i: smoothed[i])
    lr_min = lrs[i_min]
    # steepest descent of loss vs log(lr), before the minimum (central differences)
    best, i_steep = float("inf"), lo
    for i in range(max(lo, 1), max(i_min, lo + 1)):
        if i + 1 >= n:
            break
        slope = (smoothed[i + 1] - smoothed[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1]))
        if slope < best:
            best, i_steep = slope, i
    lr_steep = lrs[i_steep]
    return min(lr_min / 10.0, lr_steep * 10.0), lr_min, lr_steep


def _cycle(loader: Iterable[Any], on_epoch: Callable[[int], None] | None) -> Iterable[Any]:
    k = 0
    while True:
        if on_epoch is not None:
            on_epoch(k)
        seen = False
        for batch in loader:
            seen = True
            yield batch
        if not seen:
            raise ValueError("the loader is empty")
        k += 1


def lr_range_test(model: nn.Module, loader: Iterable[Any], optimizer: torch.optim.Optimizer,
                  criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], device: torch.device,
                  start_lr: float = 1e-5, end_lr: float = 10.0, num_steps: int = 60, smooth: float = 0.85,
                  diverge: float = 4.0, autocast: Callable[[], Any] | None = None,
                  on_epoch: Callable[[int], None] | None = None, channels_last: bool = False) -> LRFinderResult:
    """Run the range test on ``model`` with ``optimizer`` and restore both afterwards.

    Each parameter group trains at ``lr * group['lr_scale']`` (layer decay is kept). The smoothed
    loss is a bias-corrected exponential moving average (``smooth``: its lag of about 6 steps is
    a factor of about 4 in LR with the default range and steps); the test stops early when it
    exceeds ``diverge`` times its minimum or a loss is not finite. ``on_epoch(k)`` is called before
    each pass over ``loader`` (to set a sampler's epoch).
    """
    if not 0 < start_lr < end_lr:
        raise ValueError("need 0 < start_lr < end_lr")
    num_steps = max(3, int(num_steps))
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    was_training = model.training
    res = LRFinderResult()
    ratio = (end_lr / start_lr) ** (1.0 / (num_steps - 1))
    avg, best = 0.0, float("inf")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    try:
        model.train()
        batches = _cycle(loader, on_epoch)
        for step in range(num_steps):
            lr = start_lr * ratio ** step
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast() if autocast is not None else torch.enable_grad():
                loss = criterion(model(x).float(), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                res.diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1e3)  # a single huge step must not poison BatchNorm stats
            optimizer.step()
            avg = smooth * avg + (1 - smooth) * value
            sm = avg / (1 - smooth ** (step + 1))
            res.lrs.append(lr)
            res.losses.append(value)
            res.smoothed.append(sm)
            best = min(best, sm)
            if step > 5 and sm > diverge * best:
                res.diverged = True
                break
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(model_state)
        optimizer.load_state_dict(opt_state)
        torch.set_rng_state(rng)
        model.train(was_training)
    if len(res.lrs) >= 3:
        res.suggestion, res.lr_min_loss, res.lr_steepest = suggest_lr(res.lrs, res.smoothed)
    return res


def plot_lr_finder(res: LRFinderResult, path: str | Path) -> Path | None:
    """Loss (raw and smoothed) against LR on a log axis, with the suggestion marked; ``None``
    when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(res.lrs, res.losses, color="0.75", lw=1, label="loss")
    ax.plot(res.lrs, res.smoothed, color="C0", lw=2, label="smoothed")
    for lr, style, name in ((res.lr_min_loss, ":", "min loss"), (res.lr_steepest, "-.", "steepest"),
                            (res.suggestion, "--", "suggested")):
        if math.isfinite(lr):
            ax.axvline(lr, ls=style, color="C3" if name == "suggested" else "0.4", label=f"{name} {lr:.2g}")
    ax.set_xscale("log")
    if res.smoothed:
        lo, hi = min(res.smoothed), res.smoothed[0]
        ax.set_ylim(lo - 0.1 * abs(hi - lo) - 1e-3, max(hi, lo) + 0.5 * abs(hi - lo) + 1e-3)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("LR range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
