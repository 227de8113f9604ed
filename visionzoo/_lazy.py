"""Lazy package exports (PEP 562), so ``import visionzoo`` and its packages stay cheap.

A package lists ``{public name: module}`` and gets ``__getattr__``/``__dir__`` that import the
defining module on first access and cache the value in the package namespace. Module paths are
absolute (``visionzoo.data.config``) or relative to the package (``config``).
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``exports`` lazily."""

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:  # an AttributeError lets ``from package import submodule`` fall back to import
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(target if target.startswith("visionzoo") else f"{package}.{target}")
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
