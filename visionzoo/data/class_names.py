"""ImageNet-1k class names, shipped with the package so predictions are readable offline."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

__all__ = ["imagenet_class_names", "class_names_for"]

_DIR = Path(__file__).parent


@lru_cache(maxsize=2)
def imagenet_class_names(short: bool = True) -> tuple[str, ...]:
    """1000 names in class-index order; ``short`` gives one common name per class."""
    fname = "imagenet1k_short_names.txt" if short else "imagenet1k_names.txt"
    names = tuple(line.strip() for line in (_DIR / fname).read_text(encoding="utf-8").splitlines() if line.strip())
    assert len(names) == 1000, f"{fname} holds {len(names)} names"
    return names


def class_names_for(num_classes: int, label_names=None) -> list[str]:
    """Names for a head of ``num_classes``: the cfg's label names, ImageNet-1k, or indices."""
    if label_names and len(label_names) == num_classes:
        return list(label_names)
    if num_classes == 1000:
        return list(imagenet_class_names())
    return [str(i) for i in range(num_classes)]
