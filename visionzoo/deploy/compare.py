"""Comparing model outputs: an exported or optimized model against the eager one.

Outputs may be a tensor or any nesting of tuples / lists / dicts of tensors; they are compared
leaf by leaf in flattening order.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten

__all__ = ["output_tensors", "max_abs", "max_abs_diff", "bf16_close", "outputs_close"]


def output_tensors(x: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) output, in flattening order."""
    return [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]


def max_abs(x: Any) -> float:
    """The largest ``|value|`` over every tensor of an output (0 for empty outputs)."""
    return max((t.detach().double().abs().max().item() for t in output_tensors(x) if t.numel()), default=0.0)


def max_abs_diff(a: Any, b: Any) -> float:
    """The largest element-wise ``|a - b|`` over two outputs of the same structure."""
    ta, tb = output_tensors(a), output_tensors(b)
    if len(ta) != len(tb):
        raise ValueError(f"outputs differ in structure: {len(ta)} vs {len(tb)} tensors")
    return max((float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(ta, tb) if x.numel()),
               default=0.0)


def bf16_close(got: torch.Tensor, ref: torch.Tensor, rel: float = 0.05, min_cos: float = 0.995) -> tuple[bool, str]:
    """bfloat16 check: max abs diff within ``rel`` x the reference's scale and cosine similarity
    of each sample's output ≥ ``min_cos`` (bf16 keeps ~3 significant digits)."""
    got, ref = got.detach().double().flatten(1), ref.detach().double().flatten(1)
    diff = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1).min().item()
    ok = diff <= rel * max(scale, 1e-6) and cos >= min_cos
    return ok, f"max abs diff {diff:.3g} (scale {scale:.3g}, allowed {rel * scale:.3g}), min cosine {cos:.5f}"


def outputs_close(got: Any, ref: Any, dtype: torch.dtype | None) -> tuple[bool, str]:
    """float32 (``dtype`` None): max abs diff <= 1e-4 * max|ref| + 1e-5 (the conformance tolerance);
    bfloat16: :func:`bf16_close` per output tensor."""
    tg, tr = output_tensors(got), output_tensors(ref)
    if [t.shape for t in tg] != [t.shape for t in tr]:
        return False, f"output shapes differ: {[tuple(t.shape) for t in tg]} vs {[tuple(t.shape) for t in tr]}"
    if dtype is None:
        diff, tol = max_abs_diff(got, ref), 1e-4 * max_abs(ref) + 1e-5
        return diff <= tol, f"max abs diff {diff:.3g} (tolerance {tol:.3g})"
    for a, b in zip(tg, tr):
        if a.is_floating_point() and a.numel():
            ok, msg = bf16_close(a.reshape(a.shape[0], -1) if a.dim() else a.reshape(1, 1),
                                 b.reshape(b.shape[0], -1) if b.dim() else b.reshape(1, 1))
            if not ok:
                return False, msg
    return True, "bfloat16 outputs close"
