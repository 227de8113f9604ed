"""Repeated wall-clock timing with warm-up, reporting the median and the spread (IQR)."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

__all__ = ["TimingStats", "time_callable"]


@dataclass
class TimingStats:
    """Per-call times in milliseconds."""

    median_ms: float
    iqr_ms: float  # 75th - 25th percentile: the spread, robust to the odd descheduled run
    min_ms: float
    runs: int
    early_stop: bool = False  # stopped after warm-up because a call exceeded ``stop_above_ms``


def _percentile(sorted_vals: list[float], q: float) -> float:
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def time_callable(
    fn: Callable[[], object],
    warmup: int = 2,
    min_runs: int = 5,
    max_runs: int = 50,
    min_time_s: float = 1.0,
    sync: Callable[[], None] | None = None,
    stop_above_ms: float | None = None,
) -> TimingStats:
    """Time ``fn``: ``warmup`` untimed calls, then at least ``min_runs`` timed calls, going on
    until ``min_time_s`` of timed calls or ``max_runs``.

    ``sync`` (e.g. ``torch.cuda.synchronize``) is called before each clock read. When the last
    warm-up call took longer than ``stop_above_ms``, timing stops there (the result is only
    needed to know that a limit is exceeded) and that call's time is returned.
    """
    sync = sync or (lambda: None)
    last = 0.0
    for _ in range(max(warmup, 1 if stop_above_ms else 0)):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        last = (time.perf_counter() - t0) * 1e3
    if stop_above_ms is not None and last > stop_above_ms:
        return TimingStats(last, 0.0, last, 1, early_stop=True)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max(min_runs, 1) or (time.perf_counter() - start < min_time_s and len(times) < max_runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    s = sorted(times)
    return TimingStats(statistics.median(s), _percentile(s, 0.75) - _percentile(s, 0.25), s[0], len(s))
