"""On-disk cache of benchmark measurements: ``<cache>/bench/measurements.jsonl``.

Every successful measurement is appended as one JSON line (``$VISIONZOO_CACHE`` moves it, see
:func:`visionzoo.pretrained.sources.get_cache_dir`). Lookups match the measuring conditions
(image size, device, host, threads, dtype, memory format, batch sizes) and take the newest
inference and training numbers separately, so an inference-only run and a later training run of
the same model combine.
"""
from __future__ import annotations

import json
import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from .results import FIELDS, read_results

__all__ = ["cache_file", "host_id", "append_to_cache", "load_cache", "lookup", "cached_measurements"]

_INFER = ("infer_batch_size", "infer_step_ms", "infer_step_ms_iqr", "infer_step_ms_min", "infer_runs",
          "infer_samples_per_sec")
_TRAIN = ("train_batch_size", "train_step_ms", "train_step_ms_iqr", "train_step_ms_min", "train_runs",
          "train_samples_per_sec",
          "train_peak_mem_mib", "train_mem_method")
_STATIC = ("family", "params", "gmacs", "macts")


def cache_file(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the measurement cache (created on first write)."""
    from ..pretrained.sources import get_cache_dir

    return get_cache_dir(cache_dir) / "bench" / "measurements.jsonl"


@lru_cache(maxsize=None)
def host_id(device: str = "cpu") -> str:
    """A short name of the measuring hardware: CPU model and core count, or the GPU's name."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = " ".join((name or platform.processor() or platform.machine() or "cpu").split())
    return f"{name} x{os.cpu_count()}"


def append_to_cache(record: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> None:
    """Add one successful measurement to the cache."""
    if record.get("error"):
        return
    path = cache_file(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({k: record.get(k) for k in FIELDS}) + "\n")


def load_cache(cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """All cached records, oldest first."""
    path = cache_file(cache_dir)
    return read_results([path]) if path.exists() else []


def _arch(name: str) -> str:
    return name.split(".", 1)[0]


def lookup(
    model: str,
    img_size: int,
    *,
    device: str = "cpu",
    threads: int | None = None,
    dtype: str = "float32",
    channels_last: bool = False,
    optimized: bool = False,
    infer_batch_size: int | None = None,
    train_batch_size: int | None = None,
    host: str | None = None,
    records: Iterable[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Newest matching measurement of ``model`` (tag ignored), merged from inference and training
    records; ``None`` when nothing matches. ``host=None`` means this machine; ``host='*'`` any."""
    records = load_cache() if records is None else records
    host = host_id(device) if host is None else host
    want = dict(img_size=img_size, device=device.split(":")[0], dtype=dtype,
                channels_last=bool(channels_last), optimized=bool(optimized))
    merged: dict[str, Any] = {}
    for r in records:
        if not r.get("model") or _arch(r["model"]) != _arch(model) or r.get("error"):
            continue
        if any((bool(r.get(k)) if isinstance(v, bool) else r.get(k)) != v for k, v in want.items()):
            continue
        if threads is not None and r.get("threads") != threads:
            continue
        if host != "*" and r.get("host") != host:
            continue
        base = {k: r.get(k) for k in ("model", "img_size", "device", "threads", "dtype", "channels_last",
                                      "optimized", "host", "torch", "timestamp")}
        static = {k: r.get(k) for k in _STATIC if r.get(k) is not None}
        merged.update(base if not merged else {})
        merged.update(static)
        if r.get("infer_step_ms") is not None and infer_batch_size in (None, r.get("infer_batch_size")):
            merged.update({k: r.get(k) for k in _INFER})
        if r.get("train_step_ms") is not None and train_batch_size in (None, r.get("train_batch_size")):
            merged.update({k: r.get(k) for k in _TRAIN})
    return merged or None


def _describe(r: dict[str, Any]) -> str:
    where = f"{r.get('device')}, {r.get('threads')} threads, {r.get('dtype')}"
    where += ", channels_last" if r.get("channels_last") else ""
    where += ", optimized" if r.get("optimized") else ""
    return f"{r.get('img_size')}px, {where}"


def cached_measurements(name: str, cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Human-readable newest cached measurements of ``name`` on this machine, one entry per
    measuring condition (for ``visionzoo info``); ``{}`` when nothing is cached."""
    out: dict[str, str] = {}
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in load_cache(cache_dir):
        if not r.get("model") or _arch(r["model"]) != _arch(name) or r.get("host") != host_id(r.get("device") or "cpu"):
            continue
        for part, fields in (("infer", _INFER), ("train", _TRAIN)):
            if r.get(f"{part}_step_ms") is None:
                continue
            key = (part, r.get(f"{part}_batch_size"), r.get("img_size"), r.get("device"), r.get("threads"),
                   r.get("dtype"), bool(r.get("channels_last")), bool(r.get("optimized")))
            newest[key] = r
    for key, r in newest.items():
        part, bs = key[0], key[1]
        label = f"{part} bs={bs} ({_describe(r)})"
        low = r.get(f"{part}_step_ms_min")
        text = (f"{r[f'{part}_step_ms']:.2f} ms/step median (IQR {r.get(f'{part}_step_ms_iqr') or 0:.2f}"
                + (f", min {low:.2f}" if low is not None else "")
                + f", {r.get(f'{part}_runs')} runs), {r.get(f'{part}_samples_per_sec') or 0:.1f} img/s")
        if part == "train" and r.get("train_peak_mem_mib") is not None:
            text += f", peak memory {r['train_peak_mem_mib']:.0f} MiB"
        out[label] = text + f"  [{r.get('timestamp')}]"
    if out:
        r = next(iter(newest.values()))
        if r.get("gmacs") is not None:
            out = {f"GMACs @{r.get('img_size')}px": f"{r['gmacs']:.3f} (activations {r.get('macts') or 0:.2f} M)", **out}
    return out

