"""Small shape helpers shared by layers and models."""
from __future__ import annotations

import collections.abc
from typing import Any

__all__ = ["to_2tuple", "to_ntuple", "make_divisible"]


def to_ntuple(x: Any, n: int) -> tuple:
    """``x`` as a tuple: a sequence is kept as it is, a scalar (or string) is used ``n`` times."""
    if isinstance(x, str) or not isinstance(x, collections.abc.Iterable):
        return (x,) * n
    return tuple(x)


def to_2tuple(x: Any) -> tuple:
    return to_ntuple(x, 2)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than ``1 - round_limit``.

    The rule used by MobileNet/EfficientNet-style width scaling (keeps hardware-friendly widths).
    """
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v
