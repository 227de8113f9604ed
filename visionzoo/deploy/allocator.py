"""Let the process keep freed activation memory instead of faulting fresh pages in on every call.

Why: glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with
a fresh ``mmap`` and hands freed memory at the top of the heap back to the kernel once it exceeds
the trim threshold. A forward pass allocates and frees tens of MB of activations of many sizes, so
every call writes into pages the kernel must map and zero first: one minor page fault per 4 KiB.
Measured on a 2-core Xeon (``benchmarks/results/process_speed.md``): ViT-S/16 batch 1 ~6.7k faults
per forward (~15 % of its time), ConvNeXt-T batch 8 68-96k (~20 %). With both thresholds raised
the heap keeps those pages and later calls fault none. ONNX Runtime gets the same from its arena.

The setting is process-wide and stays (``mallopt`` pins the thresholds): memory freed in blocks
below ``mmap_threshold`` stays in the process up to its peak; :func:`release_memory` hands it back.
``VISIONZOO_MALLOC=default`` in the environment, a preloaded allocator (jemalloc, tcmalloc,
mimalloc) or the user's own ``GLIBC_TUNABLES`` / ``MALLOC_*_`` malloc settings leave it alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from typing import Mapping

__all__ = ["tune_malloc", "release_memory", "malloc_skip_reason"]

M_TRIM_THRESHOLD = -1  # <malloc.h> parameter numbers (stable glibc ABI)
M_MMAP_THRESHOLD = -3
DEFAULT_MMAP_THRESHOLD = 64 << 20  # covers batch-8 activations of the common backbones (<= 40 MB)
DEFAULT_TRIM_THRESHOLD = 512 << 20

_state: dict[str, str] = {}  # what tune_malloc did in this process (it runs once)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


def _is_glibc() -> bool:
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def malloc_skip_reason(environ: Mapping[str, str] | None = None) -> str | None:
    """Why :func:`tune_malloc` would leave the allocator alone here (``None``: it would tune it)."""
    env = os.environ if environ is None else environ
    if env.get("VISIONZOO_MALLOC", "").strip().lower() in ("default", "off", "0", "no", "false"):
        return "VISIONZOO_MALLOC asks for the default allocator"
    if not _is_glibc():
        return "not glibc malloc"
    preload = env.get("LD_PRELOAD", "").lower()
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return f"{name} is preloaded"
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", "") or any(
            k in env for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")):
        return "malloc is configured in the environment"
    return None


def tune_malloc(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> str:
    """Raise glibc's mmap and trim thresholds once per process; returns what was done, or why not.

    Blocks below ``mmap_threshold`` come from the heap and are reused after ``free``; the heap top
    is returned to the kernel only past ``trim_threshold``. Called by :func:`visionzoo.optimize`
    (``tune_malloc=True``). A second call returns the first call's result.
    """
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not 0 < value < 2 ** 31:
            raise ValueError(f"{name} must be between 1 and 2**31 - 1 bytes (a C int), got {value}")
    if "result" in _state:
        return _state["result"]
    why = malloc_skip_reason()
    if why is None:
        try:
            libc = _libc()
            ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)) == 1
            ok = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold)) == 1 and ok
            result = (f"tuned (mmap threshold {mmap_threshold >> 20} MiB, trim threshold {trim_threshold >> 20} MiB)"
                      if ok else "skipped: mallopt refused the thresholds")
        except (OSError, AttributeError) as e:
            result = f"skipped: {e}"
    else:
        result = f"skipped: {why}"
    _state["result"] = result
    return result


def release_memory() -> bool:
    """Hand free heap memory back to the kernel (``malloc_trim(0)``); ``False`` where that is not glibc."""
    if not _is_glibc():
        return False
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):
        return False
