"""Structure numbers of a model: parameters, MACs, activations and peak tensor memory.

* MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs / 2). It counts the
  matrix products and convolutions (``mm``, ``addmm``, ``bmm``, ``convolution``, attention
  kernels), as fvcore does for the published tables, so norms and activations are not counted.
* Activations are the elements output by those same operators (fvcore's "activation count"),
  counted by a :class:`TorchDispatchMode` that watches the same operator set.
* :class:`PeakMemoryTracker` follows every tensor storage that ops create and frees it when the
  storage dies; its peak is the most tensor bytes alive at once. That is what
  ``torch.cuda.max_memory_allocated`` reports on a GPU, without the allocator's rounding and caches,
  and unlike RSS it does not depend on glibc's heap reuse or on other threads. It works the same
  on the ``meta`` device, so training memory can be predicted without computing anything.

Counting runs on the ``meta`` device where possible: no weights are allocated, nothing is computed,
so even large models are counted in well under a second.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop

__all__ = ["count_params", "count_macs", "PeakMemoryTracker", "CountResult"]



def _cpu_sdpa_flop(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
    # ``sdpa_flop`` is already wrapped to take tensors; ``_get_raw`` stops FlopCounterMode wrapping it again
    return sdpa_flop(*args, out_val=out_val, **kwargs)


_cpu_sdpa_flop._get_raw = True  # type: ignore[attr-defined]

# CPU's fused attention kernel is missing from torch's flop table; its cost is the usual SDPA formula
_EXTRA_FLOPS: dict[Any, Callable[..., int]] = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FLOPS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flop


def _forward_ops() -> set[Any]:
    ops = set(flop_registry) | set(_EXTRA_FLOPS)
    return {op for op in ops if "backward" not in str(op)}


class CountResult(dict):
    """``{'params': int, 'macs': int, 'acts': int}`` for one image."""


def count_params(model: nn.Module) -> int:
    """Number of parameters (unique tensors; shared weights count once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


class _ActivationCounter(TorchDispatchMode):
    """Sums the output elements of the MAC-counted (forward) operators."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = _forward_ops()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in self.ops:
            # attention kernels return (out, logsumexp, ...): only the first output is an activation
            first = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(first, torch.Tensor):
                self.count += first.numel()
        return out


def count_macs(model: nn.Module, inputs: torch.Tensor) -> CountResult:
    """MACs and activations of one forward pass of ``model`` on ``inputs`` (any device, incl. meta).

    Use batch size 1 on real devices: the pass keeps autograd's graph.
    Numbers are for the whole batch; divide by the batch size for per-image values.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    flops = FlopCounterMode(display=False, custom_mapping=dict(_EXTRA_FLOPS))
    acts = _ActivationCounter()
    was_training = model.training
    model.eval()
    try:
        # grad stays enabled: FlopCounterMode's module tracker hooks autograd. The math attention
        # kernel splits attention into matmuls on every device, as on meta (and as fvcore counts).
        with sdpa_kernel(SDPBackend.MATH), flops, acts:
            model(inputs)
    finally:
        model.train(was_training)
    return CountResult(params=count_params(model), macs=int(flops.get_total_flops() // 2), acts=int(acts.count))


class PeakMemoryTracker(TorchDispatchMode):
    """Peak bytes of live tensor storage while active (CPU, meta or any device).

    Storages seen as op outputs are added when created and removed once no tensor refers to them
    (checked with weak references after every op). Tensors that exist before the block (weights,
    inputs) are registered with :meth:`track` so that the peak is the total footprint.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def track(self, tensors: Iterable[Any] | torch.Tensor) -> None:
        """Count existing tensors (e.g. ``model.parameters()``, the input batch)."""
        items = [tensors] if isinstance(tensors, torch.Tensor) else tensors
        for t in items:
            self._add(t)
        self.peak = max(self.peak, self.current)

    def _add(self, t: Any) -> None:
        if not isinstance(t, torch.Tensor):
            return
        storage = t.untyped_storage()
        key = storage._cdata
        old = self._live.get(key)
        if old is not None:
            if not old[0].expired():
                return
            self.current -= old[1]  # address reused by a new storage
        nbytes = storage.nbytes()
        self._live[key] = (StorageWeakRef(storage), nbytes)
        self.current += nbytes

    def _sweep(self) -> None:
        dead = [k for k, (ref, _) in self._live.items() if ref.expired()]
        for k in dead:
            self.current -= self._live.pop(k)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        self._sweep()  # storages that died since the previous op
        for t in pytree.tree_leaves(out):
            self._add(t)
        self.peak = max(self.peak, self.current)
        return out
