"""Layer flags (scriptable / exportable / no_jit) scoped by a context manager.

Layer factories consult these flags to pick a variant: e.g. ``exportable`` makes TF-"same"
padding static so ONNX export sees no data-dependent ``F.pad``, ``scriptable`` avoids
constructs TorchScript cannot compile.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["is_scriptable", "is_exportable", "is_no_jit", "set_layer_config", "use_fused_attn"]

_FLAGS = {"scriptable": False, "exportable": False, "no_jit": False, "fused_attn": True}


def is_scriptable() -> bool:
    return _FLAGS["scriptable"]


def is_exportable() -> bool:
    return _FLAGS["exportable"]


def is_no_jit() -> bool:
    return _FLAGS["no_jit"]


def use_fused_attn() -> bool:
    """Whether attention layers should call ``F.scaled_dot_product_attention``."""
    return _FLAGS["fused_attn"] and not _FLAGS["exportable"]


def set_fused_attn(enable: bool) -> None:
    _FLAGS["fused_attn"] = bool(enable)


@contextlib.contextmanager
def set_layer_config(
    scriptable: bool | None = None,
    exportable: bool | None = None,
    no_jit: bool | None = None,
    fused_attn: bool | None = None,
) -> Iterator[None]:
    """Temporarily set layer flags; ``None`` leaves a flag as it is."""
    saved = dict(_FLAGS)
    for key, value in (("scriptable", scriptable), ("exportable", exportable),
                       ("no_jit", no_jit), ("fused_attn", fused_attn)):
        if value is not None:
            _FLAGS[key] = bool(value)
    try:
        yield
    finally:
        _FLAGS.clear()
        _FLAGS.update(saved)
