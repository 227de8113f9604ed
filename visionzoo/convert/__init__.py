"""Foreign checkpoint formats -> visionzoo (timm-layout) state_dict keys.

Each converter has a ``detect(state_dict)`` test and a ``convert(state_dict, model)`` mapping;
loading runs the cfg's named converter, or the first one that recognises an unfamiliar
checkpoint, so ``checkpoint_path=`` accepts those formats too.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["Converter", "register_converter", "get_converter", "maybe_convert", "list_converters"]

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Converter:
    name: str
    detect: Callable[[StateDict], bool]
    convert: Callable[[StateDict, nn.Module], StateDict]
    description: str = ""


_CONVERTERS: dict[str, Converter] = {}
_BUILTIN_MODULES = ("visionzoo.convert.efficientnet_pytorch",)


def register_converter(conv: Converter) -> Converter:
    if conv.name in _CONVERTERS:
        raise ValueError(f"converter {conv.name!r} is already registered")
    _CONVERTERS[conv.name] = conv
    return conv


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_converters() -> list[str]:
    _load_builtins()
    return sorted(_CONVERTERS)


def get_converter(name: str) -> Converter:
    _load_builtins()
    try:
        return _CONVERTERS[name]
    except KeyError:
        raise ValueError(f"unknown checkpoint converter {name!r}; known: {', '.join(sorted(_CONVERTERS))}") from None


def maybe_convert(state_dict: StateDict, model: nn.Module, name: str | None = None) -> StateDict:
    """Convert with the named converter, or auto-detect a foreign layout the model lacks."""
    if name:
        return get_converter(name).convert(state_dict, model)
    own = model.state_dict()
    if all(k in own for k in state_dict):
        return state_dict
    _load_builtins()
    for conv in _CONVERTERS.values():
        if conv.detect(state_dict):
            return conv.convert(state_dict, model)
    return state_dict
