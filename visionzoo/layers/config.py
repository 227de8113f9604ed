"""Layer flags (scriptable / exportable / no_jit) read by layer factories when a model is built.

Layer factories consult these flags to pick a variant: e.g. ``exportable`` makes TF-"same"
padding static so ONNX export sees no data-dependent ``F.pad``, ``scriptable`` avoids
constructs TorchScript cannot compile.

The setters follow the reference library's calling conventions: ``set_layer_config(...)`` and
``set_scriptable(True)`` / ``set_exportable(True)`` / ``set_no_jit(True)`` take effect as soon as
they are called, and used as ``with`` blocks they restore the previous flags on exit.
"""
from __future__ import annotations

from typing import Any

__all__ = ["is_scriptable", "is_exportable", "is_no_jit", "set_layer_config", "set_scriptable",
           "set_exportable", "set_no_jit", "use_fused_attn", "set_fused_attn"]

_FLAGS = {"scriptable": False, "exportable": False, "no_jit": False, "no_activation_jit": False,
          "fused_attn": True}


def is_scriptable() -> bool:
    return _FLAGS["scriptable"]


def is_exportable() -> bool:
    return _FLAGS["exportable"]


def is_no_jit() -> bool:
    return _FLAGS["no_jit"]


def use_fused_attn(experimental: bool = False) -> bool:
    """Whether attention layers should call ``F.scaled_dot_product_attention``.

    ``experimental`` is accepted for call compatibility; visionzoo has no experimental-only
    fused paths, so it changes nothing.
    """
    return _FLAGS["fused_attn"] and not _FLAGS["exportable"]


def set_fused_attn(enable: bool = True, experimental: bool = False) -> None:
    _FLAGS["fused_attn"] = bool(enable)


class _FlagScope:
    """Sets flags on construction; as a context manager, restores the earlier ones on exit."""

    def __init__(self, **values: Any) -> None:
        self._saved = dict(_FLAGS)
        for key, value in values.items():
            if value is not None:
                _FLAGS[key] = bool(value)

    def __enter__(self) -> "_FlagScope":
        return self

    def __exit__(self, *exc: Any) -> bool:
        _FLAGS.clear()
        _FLAGS.update(self._saved)
        return False


class set_layer_config(_FlagScope):  # noqa: N801 - the reference's name
    """Set layer flags; ``None`` leaves a flag as it is.

    Takes effect immediately; ``with set_layer_config(...):`` scopes the change to the block.
    ``no_activation_jit`` is accepted for compatibility (visionzoo's activations are not JIT
    scripted, so it has no further effect). ``fused_attn`` toggles fused attention.
    """

    def __init__(self, scriptable: bool | None = None, exportable: bool | None = None,
                 no_jit: bool | None = None, no_activation_jit: bool | None = None,
                 fused_attn: bool | None = None) -> None:
        super().__init__(scriptable=scriptable, exportable=exportable, no_jit=no_jit,
                         no_activation_jit=no_activation_jit, fused_attn=fused_attn)


class set_scriptable(_FlagScope):  # noqa: N801
    """Set the ``scriptable`` flag (immediately, or for a ``with`` block)."""

    def __init__(self, mode: bool) -> None:
        super().__init__(scriptable=mode)


class set_exportable(_FlagScope):  # noqa: N801
    """Set the ``exportable`` flag (immediately, or for a ``with`` block)."""

    def __init__(self, mode: bool) -> None:
        super().__init__(exportable=mode)


class set_no_jit(_FlagScope):  # noqa: N801
    """Set the ``no_jit`` flag (immediately, or for a ``with`` block)."""

    def __init__(self, mode: bool) -> None:
        super().__init__(no_jit=mode)
