"""Measure models: parameters, GMACs, activations, inference speed, training step time and memory.

:func:`benchmark` is the notebook API (``visionzoo.benchmark``) under ``visionzoo benchmark``;
:func:`measure_model` measures one model under one :class:`BenchConfig`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import gc
import inspect
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn as nn

from .counting import PeakMemoryTracker, count_macs, count_params
from .timing import time_callable

__all__ = ["BenchConfig", "BenchmarkInterrupted", "benchmark", "build_model", "count_model", "first_output",
           "measure_model", "num_threads", "resolve_model_names"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "int8": torch.float32}  # int8: float inputs into an ONNX Runtime int8 graph (inference only)
_MODES = ("infer", "train", "both")


@dataclass
class BenchConfig:
    """How to measure. ``train_batch_size`` defaults to ``batch_size``; ``img_size`` to the
    model's default input size; ``threads`` to torch's current setting."""

    batch_size: int = 1
    train_batch_size: int | None = None
    img_size: int | None = None
    mode: str = "both"
    channels_last: bool = False
    dtype: str = "float32"
    device: str = "auto"
    threads: int | None = None
    optimize: bool = False
    warmup: int = 2
    repeats: int = 5  # timed runs at least
    min_time: float = 1.0  # seconds of timed runs at least (up to max_runs)
    max_runs: int = 50
    count_macs: bool = True
    infer_stop_above_ms: float | None = None  # stop timing after warm-up when a call is slower
    train_stop_above_ms: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.dtype == "int8":  # int8 is a quantized inference graph: no training, always optimized
            if self.mode == "train":
                raise ValueError("dtype int8 measures inference only (mode 'infer')")
            self.mode, self.optimize = "infer", True
        if self.batch_size < 1 or (self.train_batch_size is not None and self.train_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        if self.img_size is not None and self.img_size < 8:
            raise ValueError(f"img_size {self.img_size} is too small")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for but torch.cuda.is_available() is False")
        if self.train_batch_size is None:
            self.train_batch_size = self.batch_size


class BenchmarkInterrupted(KeyboardInterrupt):
    """Raised on Ctrl-C during :func:`benchmark`; ``.results`` holds what was measured."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        super().__init__("benchmark interrupted")
        self.results = results


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def resolve_model_names(models: str | Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Exact names (``resnet50``, ``resnet50.a1_in1k``) and wildcard filters -> model names.

    Unknown exact names raise the registry's error with suggestions; a filter that matches no
    model raises ``ValueError``.
    """
    from ..registry import get_model_module, get_pretrained_cfg, list_models

    items = [models] if isinstance(models, str) else list(models)
    if not items:
        raise ValueError("no models given: name models or wildcard filters, e.g. 'resnet18' 'convnext_*'")
    names: list[str] = []
    for item in items:
        if any(c in item for c in "*?["):
            found = list_models(item, include_tags="." in item, exclude_filters=list(exclude))
            if not found:
                raise ValueError(f"filter {item!r} matches no model; see `visionzoo list {item}`")
            names += found
        else:
            get_model_module(item)  # raises for unknown models, with suggestions
            if "." in item:
                get_pretrained_cfg(item)  # raises for unknown tags
            names.append(item)
    unique = dict.fromkeys(names)  # keeps the order
    return [n for n in unique if not any(fnmatch.fnmatchcase(n, e) for e in exclude)]


def build_model(name: str, device: str | torch.device, kwargs: dict[str, Any]) -> nn.Module:
    """``create_model(name, **kwargs)`` with its tensors created on ``device`` (``"meta"`` too)."""
    from ..factory import create_model

    with torch.device(device):
        return create_model(name, **kwargs)


_KNOWN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _create_fast(name: str, device: str | torch.device, kwargs: dict[str, Any]) -> nn.Module:
    """A model with random weights, built on the meta device and filled in place.

    Timing does not depend on weight values, and the per-layer init functions of big models take
    longer than the measurement itself (seconds for a ViT-B). Weights get a fan-in scaled normal
    (activations keep their scale, so no denormals slow the CPU down), norms weight 1 / bias 0.
    Models with other state-dict buffers than BatchNorm statistics use the normal constructor.
    """
    from ..builder import init_non_persistent_buffers

    model = build_model(name, "meta", kwargs)
    persistent = set(model.state_dict()) - {n for n, _ in model.named_parameters()}
    if any(not k.endswith(_KNOWN_BUFFERS) for k in persistent):
        return build_model(name, device, kwargs)
    model = model.to_empty(device=device)
    init_non_persistent_buffers(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim >= 2 and "token" not in n and "pos_embed" not in n:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif p.ndim >= 2:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0 if n.endswith("weight") or n.endswith("gamma") else 0.0)
        for n, b in model.named_buffers():
            if n.endswith("running_var"):
                b.fill_(1.0)
            elif n.endswith(("running_mean", "num_batches_tracked")):
                b.zero_()
    return model


def _input_size(model: nn.Module, img_size: int | None) -> tuple[int, int, int]:
    from ..data.config import resolve_model_data_config

    c, h, w = resolve_model_data_config(model)["input_size"]
    return (c, img_size, img_size) if img_size else (c, h, w)


def first_output(out: Any) -> torch.Tensor:
    """The first tensor of a model output (nested tuples / lists: their first element)."""
    while isinstance(out, (tuple, list)):
        out = out[0]
    return out


def count_model(name: str, cfg: BenchConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Params, GMACs and activations per image (meta device first, the CPU if meta fails).

    Returns the numbers and the model kwargs that worked (``img_size`` for models whose
    position embeddings fix the input size)."""
    attempts = [dict(cfg.model_kwargs)]
    if cfg.img_size:
        attempts.append({**cfg.model_kwargs, "img_size": cfg.img_size})
    last_err: Exception | None = None
    for kwargs in attempts:
        for device in ("meta", "cpu"):
            try:
                model = build_model(name, device, kwargs)
                size = _input_size(model, cfg.img_size)
                if not cfg.count_macs:
                    return {"params": count_params(model), "img_size": size[-1]}, kwargs
                n = count_macs(model, torch.randn(1, *size, device=device))
                return {"params": n["params"], "gmacs": n["macs"] / 1e9, "macts": n["acts"] / 1e6,
                        "img_size": size[-1]}, kwargs
            except TypeError as e:  # the model takes no such argument: next attempt
                last_err = e
                break
            except Exception as e:  # noqa: BLE001 - meta unsupported or wrong size: try the next way
                last_err = e
    assert last_err is not None
    raise last_err


def _optimizer_fn() -> Callable[..., nn.Module] | None:
    try:
        from ..inference import optimize  # type: ignore[attr-defined]
    except ImportError:
        return None
    return optimize


def _apply_optimize(model: nn.Module, example: torch.Tensor, cfg: BenchConfig) -> tuple[nn.Module, str]:
    """``visionzoo.inference.optimize`` with the benchmark's dtype; returns the model and a note."""
    fn = _optimizer_fn()
    if fn is None:
        raise ImportError("visionzoo.inference.optimize is not available")
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    for key in ("example", "example_inputs", "example_input"):
        if key in params:
            kwargs[key] = example
            break
    if "dtype" in params:
        kwargs["dtype"] = cfg.dtype
    if cfg.dtype == "int8":  # calibration for speed only: activation ranges of random inputs
        kwargs["calibration"] = torch.randn(16, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    if cfg.channels_last and "channels_last" in params:
        kwargs["channels_last"] = True
    out = fn(model, **kwargs)
    report = getattr(out, "report", None)
    note = "optimize: " + ", ".join(f"{k}={v}" for k, v in report.items()) if isinstance(report, dict) else "optimize"
    return out, note


def _sync(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.startswith("cuda") else None


def _measure_train(model: nn.Module, size: tuple[int, ...], cfg: BenchConfig, rec: dict[str, Any]) -> None:
    device, bs = cfg.device, int(cfg.train_batch_size or cfg.batch_size)
    dtype = _DTYPES[cfg.dtype]
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.train()
    x = torch.randn(bs, *size, device=device).contiguous(memory_format=fmt)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    target = torch.randint(0, max(num_classes, 1), (bs,), device=device)
    autocast = (torch.autocast(device_type=device.split(":")[0], dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())

    def forward_backward() -> None:
        with autocast:
            out = first_output(model(x))
        if out.ndim == 2 and num_classes > 0:
            loss = nn.functional.cross_entropy(out.float(), target)
        else:  # headless / features model: any scalar will do for timing
            loss = out.float().mean()
        loss.backward()

    # peak memory of forward + backward from a clean state (no grads, no optimizer state)
    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        forward_backward()
        torch.cuda.synchronize()
        peak, method = torch.cuda.max_memory_allocated(device) - rec.pop("_cuda_base", 0), "cuda.max_memory_allocated"
    else:
        tracker = PeakMemoryTracker()
        tracker.track(list(model.parameters()) + list(model.buffers()) + [x, target])
        with tracker:
            forward_backward()
        peak, method = tracker.peak, "live-tensor-peak"
    rec["train_peak_mem_mib"] = peak / 2**20
    rec["train_mem_method"] = method

    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        forward_backward()
        opt.step()

    st = time_callable(step, warmup=cfg.warmup, min_runs=max(3, cfg.repeats // 2), max_runs=cfg.max_runs,
                       min_time_s=cfg.min_time, sync=_sync(device), stop_above_ms=cfg.train_stop_above_ms)
    rec.update(train_batch_size=bs, train_step_ms=st.median_ms, train_step_ms_iqr=st.iqr_ms,
               train_step_ms_min=st.min_ms, train_runs=st.runs, train_samples_per_sec=bs * 1e3 / st.median_ms)
    if st.early_stop:
        rec["note"] = _join(rec.get("note"), f"train timing stopped after warm-up (> {cfg.train_stop_above_ms:.0f} ms)")
    opt.zero_grad(set_to_none=True)


def _measure_infer(model: nn.Module, size: tuple[int, ...], cfg: BenchConfig, rec: dict[str, Any]) -> None:
    device, bs, dtype = cfg.device, cfg.batch_size, _DTYPES[cfg.dtype]
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.eval()
    warmup = cfg.warmup
    if cfg.optimize:  # optimize converts the model and its inputs itself (dtype, memory format)
        x = torch.randn(bs, *size, device=device)
        model, note = _apply_optimize(model, x, cfg)
        rec["optimized"] = True
        rec["note"] = _join(rec.get("note"), note)
        warmup = max(warmup, 1)  # a compiled model compiles on its first call
    else:
        if dtype != torch.float32:
            model.to(dtype)
        x = torch.randn(bs, *size, device=device, dtype=dtype).contiguous(memory_format=fmt)
    with torch.inference_mode():
        st = time_callable(lambda: model(x), warmup=warmup, min_runs=cfg.repeats, max_runs=cfg.max_runs,
                           min_time_s=cfg.min_time, sync=_sync(device), stop_above_ms=cfg.infer_stop_above_ms)
    rec.update(infer_batch_size=bs, infer_step_ms=st.median_ms, infer_step_ms_iqr=st.iqr_ms,
               infer_step_ms_min=st.min_ms, infer_runs=st.runs, infer_samples_per_sec=bs * 1e3 / st.median_ms)
    if st.early_stop:
        rec["note"] = _join(rec.get("note"), f"infer timing stopped after warm-up (> {cfg.infer_stop_above_ms:.0f} ms)")


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b


def measure_model(name: str, cfg: BenchConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Measure one model; returns a record with the fields of :data:`visionzoo.bench.results.FIELDS`.

    A failure (unsupported size, out of memory, ...) is recorded in ``record['error']`` instead
    of raised, so that a sweep over many models goes on; bad arguments still raise.
    """
    from .cache import host_id
    from ..registry import get_model_module

    cfg = replace(cfg or BenchConfig(), **overrides) if overrides else (cfg or BenchConfig())
    rec: dict[str, Any] = dict(
        model=name, family=get_model_module(name), device=cfg.device.split(":")[0], threads=torch.get_num_threads(),
        dtype=cfg.dtype, channels_last=cfg.channels_last, optimized=False, host=host_id(cfg.device),
        torch=torch.__version__.split("+")[0], img_size=cfg.img_size,
        timestamp=_dt.datetime.now().isoformat(timespec="seconds"),
    )
    if cfg.device.startswith("cuda"):
        rec["threads"] = None
    model: nn.Module | None = None
    try:
        counts, kwargs = count_model(name, cfg)
        rec.update(counts)
        if cfg.device.startswith("cuda"):
            gc.collect()
            torch.cuda.empty_cache()
            rec["_cuda_base"] = torch.cuda.memory_allocated(cfg.device)
        model = _create_fast(name, cfg.device, kwargs)
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model.to(memory_format=fmt)
        size = (int(_input_size(model, None)[0]), rec["img_size"], rec["img_size"])
        if cfg.mode in ("train", "both"):
            _measure_train(model, size, cfg, rec)
        if cfg.mode in ("infer", "both"):
            _measure_infer(model, size, cfg, rec)
    except torch.OutOfMemoryError as e:
        rec["error"] = f"out of memory: {str(e).splitlines()[0]}"
    except Exception as e:  # noqa: BLE001 - one model failing must not end a sweep
        rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    finally:
        rec.pop("_cuda_base", None)
        del model
        gc.collect()
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rec


def _summary(r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"{r['model']}: error: {r['error']}"
    parts = [f"{r['model']}: {r['params'] / 1e6:.2f}M params"]
    if r.get("gmacs") is not None:
        parts.append(f"{r['gmacs']:.2f} GMACs")
    if r.get("infer_step_ms") is not None:
        parts.append(f"infer {r['infer_step_ms']:.1f} ms (bs {r['infer_batch_size']})")
    if r.get("train_step_ms") is not None:
        parts.append(f"train {r['train_step_ms']:.0f} ms, {r['train_peak_mem_mib']:.0f} MiB (bs {r['train_batch_size']})")
    return ", ".join(parts)


def benchmark(
    models: str | Sequence[str],
    *,
    batch_size: int = 1,
    train_batch_size: int | None = None,
    img_size: int | None = None,
    mode: str = "both",
    channels_last: bool = False,
    dtype: str = "float32",
    device: str = "auto",
    threads: int | None = None,
    optimize: bool = False,
    warmup: int = 2,
    repeats: int = 5,
    min_time: float = 1.0,
    max_runs: int = 50,
    exclude: Sequence[str] = (),
    out: str | os.PathLike | None = None,
    cache: bool = True,
    progress: bool = True,
    config: BenchConfig | None = None,
) -> list[dict[str, Any]]:
    """Measure each model and return one record per model (see :data:`~visionzoo.bench.results.FIELDS`).

    Args:
        models: names (``'resnet50'``, ``'resnet50.a1_in1k'``) and/or wildcard filters (``'convnext_*'``).
        batch_size: inference batch size (latency = time of one batch); also the training batch
            size unless ``train_batch_size`` is given.
        img_size: square input size; default each model's own.
        mode: ``'infer'``, ``'train'`` or ``'both'``.
        channels_last, dtype: memory format and precision (``'bfloat16'`` casts the model for
            inference and uses autocast for training).
        device: ``'cpu'``, ``'cuda'`` or ``'auto'``. threads: torch intra-op threads (CPU).
        optimize: run ``visionzoo.inference.optimize`` on the model before timing inference.
        warmup, repeats, min_time, max_runs: timing: untimed calls, then at least ``repeats`` timed
            calls and at least ``min_time`` seconds (at most ``max_runs`` calls).
        out: ``.csv`` / ``.json`` / ``.jsonl`` file the records are appended to as they complete.
        cache: also store successful records in the measurement cache (used by ``select``/``info``).
        progress: show a progress bar on stderr.

    Ctrl-C raises :class:`BenchmarkInterrupted` whose ``results`` holds the finished records;
    everything finished is already in ``out`` and the cache.
    """
    from .cache import append_to_cache
    from .results import ResultWriter

    cfg = config or BenchConfig(batch_size=batch_size, train_batch_size=train_batch_size, img_size=img_size,
                                mode=mode, channels_last=channels_last, dtype=dtype, device=device,
                                threads=threads, optimize=optimize, warmup=warmup, repeats=repeats,
                                min_time=min_time, max_runs=max_runs)
    if cfg.optimize and _optimizer_fn() is None:
        print("visionzoo benchmark: --optimize skipped: visionzoo.inference.optimize is not available",
              file=sys.stderr)
        cfg = replace(cfg, optimize=False)
    names = resolve_model_names(models, exclude)
    writer = ResultWriter(out) if out else None
    results: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    bar = tqdm(names, desc="benchmark", unit="model", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        with num_threads(cfg.threads):
            for name in bar:
                bar.set_postfix_str(name)
                rec = measure_model(name, cfg)
                results.append(rec)
                if writer:
                    writer.write(rec)
                if cache:
                    append_to_cache(rec)
                if progress:
                    bar.write(_summary(rec), file=sys.stderr)
    except KeyboardInterrupt as e:
        raise BenchmarkInterrupted(results) from e
    finally:
        bar.close()
    return results

