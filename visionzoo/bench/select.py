"""``visionzoo select``: which implemented model to use for an accuracy / speed / memory budget.

:func:`select` (``visionzoo.select``) joins the published ImageNet-1k results (package data, see
:mod:`visionzoo.bench.reference`) with measurements taken on this machine. Measurements come
from the cache or from result files given by the caller, and missing ones are run on demand:

1. Published results are filtered by the static criteria (``min_top1``, ``img_size``, ``models``,
   ``pretrain``, ``max_params_m``); each architecture keeps its most accurate tag.
2. Architectures implemented in visionzoo are visited from the most accurate down. Each is
   counted (GMACs, on the meta device) and checked against cheap bounds before anything is
   built for real: a latency floor (its GMACs at a margin over the fastest rate possible here:
   3x the machine's matmul peak, then 2x the fastest model measured so far) and, with a memory
   limit, its training memory predicted on the meta device. Then it is measured (inference
   first; training only when needed and the inference limit is met). Timing stops after the
   warm-up call when that call is already 1.5x over a limit.
3. Once ``top`` models meet every limit, the remaining (less accurate) ones are measured only if
   they have fewer GMACs than every more accurate feasible model, since only those can still
   be on the accuracy-vs-cost Pareto front; the rest are reported as skipped.

Rejections from the estimates say so (``estimate, not measured``).
Architectures that have published results but are not implemented yet are listed apart.
"""
from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .reference import AccuracyRow, load_accuracy

__all__ = ["select", "SelectionQuery", "Selection", "Candidate", "COSTS", "pareto_front"]

# cost name -> (record field, axis label, lower is better)
COSTS: dict[str, tuple[str, str]] = {
    "latency": ("infer_step_ms", "inference time per batch (ms)"),
    "train-step": ("train_step_ms", "training step time (ms)"),
    "train-memory": ("train_peak_mem_mib", "training peak memory (MiB)"),
    "gmacs": ("gmacs", "GMACs per image"),
    "params": ("params_m", "parameters (M)"),
}


@dataclass
class Candidate:
    """One architecture (its most accurate tag at the chosen size) and what is known about it."""

    row: AccuracyRow
    implemented: bool
    family: str | None = None
    measured: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"  # 'ok', 'rejected', 'skipped', 'unmeasured', 'error'
    reasons: list[str] = field(default_factory=list)
    on_front: bool = False

    @property
    def name(self) -> str:
        return self.row.model

    @property
    def arch(self) -> str:
        return self.row.arch

    @property
    def top1(self) -> float:
        return self.row.top1

    def value(self, key: str) -> float | None:
        if key == "params_m":
            p = self.measured.get("params")
            return p / 1e6 if p is not None else self.row.param_count
        v = self.measured.get(key)
        if v is None and key.endswith("_min"):  # results written before min times were recorded
            v = self.measured.get(key[:-4])
        return float(v) if v is not None else None

    def as_record(self) -> dict[str, Any]:
        r = self.row
        out: dict[str, Any] = dict(model=r.model, arch=r.arch, family=self.family, img_size=r.img_size, top1=r.top1,
                                   top5=r.top5, pretrain=r.pretrain, status=self.status, on_front=self.on_front,
                                   reasons="; ".join(self.reasons), implemented=self.implemented)
        out.update({f"top1_{k}": v for k, v in r.robustness.items()})
        out["params_m"] = self.value("params_m")
        for k in ("gmacs", "macts", "infer_batch_size", "infer_step_ms", "infer_step_ms_iqr", "infer_samples_per_sec",
                  "train_batch_size", "train_step_ms", "train_step_ms_iqr", "train_peak_mem_mib", "threads", "host",
                  "predicted_train_mem_mib"):
            out[k] = self.measured.get(k)
        return out


def pareto_front(points: Sequence[Candidate], cost_key: str) -> list[Candidate]:
    """Candidates no other candidate beats on both accuracy (higher) and cost (lower); by cost."""
    pts = [c for c in points if c.value(cost_key) is not None]
    pts.sort(key=lambda c: (c.value(cost_key), -c.top1))
    front: list[Candidate] = []
    best = -math.inf
    for c in pts:
        if c.top1 > best:
            front.append(c)
            best = c.top1
    return front


@dataclass
class Selection:
    """The answer of :func:`select`: ranked feasible models, the Pareto front and the rest."""

    query: dict[str, Any]
    cost: str
    ranked: list[Candidate]
    front: list[Candidate]
    rejected: list[Candidate]
    skipped: list[Candidate]
    not_implemented: list[Candidate]
    benchmarks_run: int = 0
    plot_path: Path | None = None
    budget: "SelectionQuery | None" = None  # the query this answers

    @property
    def cost_key(self) -> str:
        """The measured field on the x axis (``*_min`` when ``timing='min'``)."""
        key = COSTS[self.cost][0]
        return key + "_min" if self.query.get("timing") == "min" and key.endswith("step_ms") else key

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    def records(self) -> list[dict[str, Any]]:
        """Every candidate as a flat dict (ranked first, then rejected, skipped, not implemented)."""
        return [c.as_record() for c in self.ranked + self.rejected + self.skipped + self.not_implemented]

    def table(self, top: int | None = None, robustness: bool = False) -> str:
        """The ranked table as text (``*`` marks the Pareto front)."""
        from .table import format_table

        rows = self.ranked[:top] if top else self.ranked
        stat = "_min" if self.query.get("timing") == "min" else ""
        return format_table([_table_row(i + 1, c, robustness, stat) for i, c in enumerate(rows)])

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Accuracy vs cost scatter with the Pareto front, saved as PNG / SVG / PDF (matplotlib)."""
        from .plot import plot_selection

        self.plot_path = plot_selection(self, Path(path), title=title)
        return self.plot_path

    def chart(self, width: int = 72, height: int = 18) -> str:
        """The same scatter drawn with characters, for the terminal."""
        from .plot import ascii_chart

        return ascii_chart(self, width=width, height=height)

    def report(self, top: int | None = 10, robustness: bool = False, chart: bool = True) -> str:
        """Everything a person reads: conditions, table, front, chart, rejected and missing models."""
        q = self.query
        shown = self.front + self.rejected[:15] + self.skipped[:8] + self.not_implemented[:10]
        w = min(max([len(c.name) for c in shown] + [20]) + 1, 60)
        lines = [f"visionzoo select on {q['host']} ({q['device']}, {q['threads']} threads, {q['dtype']}"
                 f"{', channels_last' if q['channels_last'] else ''}"
                 f"{', optimized' if q.get('optimize') else ''}), inference batch {q['batch_size']}, "
                 f"training batch {q['train_batch_size']}, "
                 f"{'img ' + str(q['img_size']) if q['img_size'] else 'each tag at its evaluation size'}"]
        limits = [f"{k}={v}" for k, v in q["limits"].items() if v is not None]
        lines.append(f"limits: {', '.join(limits) or 'none'};  cost axis: {self.cost};  times: {q.get('timing')} "
                     f"of the timed runs;  {self.benchmarks_run} benchmarks run now")
        lines.append("")
        if self.ranked:
            n_shown = min(len(self.ranked), top or len(self.ranked))
            lines.append(f"{len(self.ranked)} models meet the limits (top {n_shown}; * = on the Pareto front):")
            lines.append(self.table(top, robustness))
        else:
            lines.append("no implemented model meets the limits.")
        if self.front:
            lines.append("")
            key, label = self.cost_key, COSTS[self.cost][1]
            lines.append(f"Pareto front (top-1 vs {label}):")
            for c in self.front:
                lines.append(f"  {c.name:<{w}} top1 {c.top1:6.2f}   {_fmt_cost(c.value(key))}")
        if chart and (self.ranked or self.rejected):
            lines += ["", self.chart()]
        if self.rejected:
            lines.append("")
            lines.append(f"rejected ({len(self.rejected)}):")
            for c in self.rejected[:15]:
                lines.append(f"  {c.name:<{w}} top1 {c.top1:6.2f}   {'; '.join(c.reasons)}")
            if len(self.rejected) > 15:
                lines.append(f"  ... and {len(self.rejected) - 15} more")
        if self.skipped:
            lines.append("")
            n_unmeasured = sum(c.status == "unmeasured" for c in self.skipped)
            lines.append(f"not measured ({len(self.skipped)}"
                         + (f", {n_unmeasured} over --max-benchmarks" if n_unmeasured else "") + "):")
            for c in self.skipped[:8]:
                lines.append(f"  {c.name:<{w}} top1 {c.top1:6.2f}   {'; '.join(c.reasons)}")
            if len(self.skipped) > 8:
                lines.append(f"  ... and {len(self.skipped) - 8} more")
        if self.not_implemented:
            lines.append("")
            lines.append(f"published results whose architecture is not implemented in visionzoo yet "
                         f"({len(self.not_implemented)}; most accurate first):")
            for c in self.not_implemented[:10]:
                lines.append(f"  {c.name:<{w}} top1 {c.top1:6.2f}   img {c.row.img_size:<4} {c.row.param_count:8.2f} M params")
            if len(self.not_implemented) > 10:
                lines.append(f"  ... and {len(self.not_implemented) - 10} more")
        if self.plot_path:
            lines += ["", f"plot written to {self.plot_path}"]
        return "\n".join(lines)


def _fmt_cost(v: float | None) -> str:
    return "-" if v is None else (f"{v:.3g}" if v < 100 else f"{v:.0f}")


def _table_row(rank: int, c: Candidate, robustness: bool, stat: str = "") -> dict[str, str]:
    m = c.measured

    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    row = {"#": str(rank), "": "*" if c.on_front else "", "model": c.name, "top1": f"{c.top1:.2f}",
           "img": str(c.row.img_size), "params M": f(c.value("params_m"), ".1f"), "GMACs": f(m.get("gmacs"), ".2f")}
    infer, train = c.value("infer_step_ms" + stat), c.value("train_step_ms" + stat)
    if infer is not None:
        row["infer ms"] = f"{infer:.1f}" + ("" if stat else f"±{(m.get('infer_step_ms_iqr') or 0) / 2:.1f}")
        row["img/s"] = f"{(m.get('infer_batch_size') or 1) * 1e3 / infer:.1f}"
    else:
        row["infer ms"], row["img/s"] = "-", "-"
    row["train ms"] = f(train, ".0f")
    mem = m.get("train_peak_mem_mib")
    row["train GiB"] = f(mem / 1024 if mem is not None else None, ".2f")
    if robustness:
        for k in ("real", "v2", "sketch", "a", "r"):
            row[k] = f(c.row.robustness.get(k), ".1f")
    return row


@lru_cache(maxsize=None)
def _static_counts(model: str, img_size: int) -> dict[str, Any]:
    """Params / GMACs / activations of an architecture at a size, counted on the meta device."""
    from .measure import BenchConfig, count_model

    counts, _ = count_model(model, BenchConfig(img_size=img_size, device="cpu"))
    return counts


def predict_train_memory_mib(model: str, img_size: int, batch_size: int) -> float:
    """Training (forward + backward) peak tensor memory predicted on the meta device, in MiB.

    Exact for convolutional nets; an upper bound for attention models (on meta, attention runs as
    plain matmuls that keep the attention matrix, which fused CPU/GPU kernels do not).
    """
    from .counting import PeakMemoryTracker
    from .measure import build_model, first_output

    m = build_model(model, "meta", {})
    m.train()
    x = torch.randn(batch_size, 3, img_size, img_size, device="meta")
    tracker = PeakMemoryTracker()
    tracker.track(list(m.parameters()) + list(m.buffers()) + [x])
    with tracker:
        first_output(m(x)).float().mean().backward()
    return tracker.peak / 2**20


# no model runs faster than this many times the machine's dense matmul rate (the margin covers
# Winograd-style convolutions that need fewer multiplications than their MAC count)
_PEAK_MARGIN = 3.0
# ... and no faster than this many times the fastest model measured so far
_RATE_MARGIN = 2.0


@lru_cache(maxsize=None)
def machine_peak_gmac_per_ms(device: str = "cpu", threads: int | None = None) -> float:
    """Dense float32 matmul throughput of this machine (GMAC per ms), the best of a few runs.

    Used to skip models whose MAC count alone rules out a latency limit, without building them.
    """
    from .measure import num_threads
    from .timing import time_callable

    n = 1024
    with num_threads(threads):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        st = time_callable(lambda: a @ b, warmup=2, min_runs=5, max_runs=20, min_time_s=0.2, sync=sync)
    return n**3 / 1e9 / st.min_ms


def _match(name: str, patterns: Sequence[str]) -> bool:
    arch = name.split(".", 1)[0]
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(arch, p) for p in patterns)


def _as_tuple(v: Any) -> tuple:
    if v is None:
        return ()
    return (v,) if isinstance(v, (str, os.PathLike)) else tuple(v)


_LIMITS = ("max_latency_ms", "max_train_memory_gb", "max_train_step_ms", "min_top1", "max_params_m", "max_gmacs")


@dataclass(frozen=True)
class SelectionQuery:
    """What :func:`select` looks for: the budget (limits), the conditions to measure under and
    how far to search. Validated on construction; ``models`` / ``exclude`` / ``pretrain`` /
    ``measurements`` are stored as tuples (a single string is one item).

    Limits: ``max_latency_ms`` (inference time of one batch of ``batch_size``),
    ``max_train_memory_gb`` (forward+backward peak, GiB, at ``train_batch_size``),
    ``max_train_step_ms`` (one SGD step at ``train_batch_size``), ``min_top1`` (published top-1, %),
    ``max_params_m``, ``max_gmacs``. See :func:`select` for the other fields.
    """

    max_latency_ms: float | None = None
    max_train_memory_gb: float | None = None
    max_train_step_ms: float | None = None
    min_top1: float | None = None
    max_params_m: float | None = None
    max_gmacs: float | None = None
    img_size: int | None = None
    batch_size: int = 1
    train_batch_size: int = 32
    threads: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    channels_last: bool = False
    optimize: bool = False
    models: Sequence[str] = ()
    exclude: Sequence[str] = ()
    pretrain: Sequence[str] = ()
    cost: str = "latency"
    timing: str = "median"
    top: int = 10
    measure_train: bool | None = None
    run: bool = True
    max_benchmarks: int = 30
    measurements: Sequence[str | os.PathLike] = ()
    warmup: int = 1
    repeats: int = 5
    min_time: float = 0.5

    def __post_init__(self) -> None:
        if self.cost not in COSTS:
            raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {self.cost!r}")
        if self.timing not in ("median", "min"):
            raise ValueError(f"timing must be 'median' or 'min', got {self.timing!r}")
        for label in _LIMITS:
            v = getattr(self, label)
            if label != "min_top1" and v is not None and v <= 0:
                raise ValueError(f"{label} must be > 0, got {v}")
        if self.top < 1 or self.max_benchmarks < 0:
            raise ValueError("top must be >= 1 and max_benchmarks >= 0")
        for name in ("models", "exclude", "pretrain", "measurements"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))

    @property
    def optimized(self) -> bool:
        """Whether inference is timed after :func:`visionzoo.optimize` (int8 always is)."""
        return self.optimize or self.dtype == "int8"

    @property
    def limits(self) -> dict[str, float | None]:
        return {k: getattr(self, k) for k in _LIMITS}

    @property
    def stat(self) -> str:
        """Suffix of the timing fields compared with the limits (``_min`` or nothing)."""
        return "_min" if self.timing == "min" else ""

    @property
    def need_train(self) -> bool:
        return bool(self.measure_train) or (self.measure_train is None and (
            self.max_train_memory_gb is not None or self.max_train_step_ms is not None
            or self.cost in ("train-step", "train-memory")))

    @property
    def need_infer(self) -> bool:
        return self.cost == "latency" or self.max_latency_ms is not None or not self.need_train

    @property
    def mem_limit_mib(self) -> float | None:
        return self.max_train_memory_gb * 1024 if self.max_train_memory_gb is not None else None


# --- 1. candidates: published results -> one row per architecture ------------------------------------

def published_rows(query: SelectionQuery,
                   reference: str | os.PathLike | Sequence[AccuracyRow] | None = None) -> list[AccuracyRow]:
    """Published results (most accurate first) that pass the query's static filters."""
    if reference is None or isinstance(reference, (str, os.PathLike)):
        if reference is not None and not (Path(reference) / "results-imagenet.csv").exists():
            raise FileNotFoundError(f"no results-imagenet.csv in {str(reference)!r}")
        rows = load_accuracy(reference)
    else:
        rows = sorted(reference, key=lambda r: -r.top1)
    q = query
    if q.img_size is not None:
        rows = [r for r in rows if r.img_size == q.img_size]
        if not rows:
            raise ValueError(f"no published result at img_size {q.img_size}")
    if q.models:
        rows = [r for r in rows if _match(r.model, q.models)]
        if not rows:
            raise ValueError(f"--models {' '.join(q.models)} matches no published result")
    if q.exclude:
        rows = [r for r in rows if not _match(r.model, q.exclude)]
    if q.pretrain:
        rows = [r for r in rows if r.pretrain in q.pretrain]
    if q.min_top1 is not None:
        rows = [r for r in rows if r.top1 >= q.min_top1]
    if q.max_params_m is not None:
        rows = [r for r in rows if r.param_count <= q.max_params_m]
    return rows


def gather_candidates(rows: Sequence[AccuracyRow]) -> tuple[list[Candidate], list[Candidate]]:
    """The most accurate row of each architecture, split into (implemented, not implemented)."""
    from ..registry import get_model_module, is_model

    best: dict[str, AccuracyRow] = {}
    for r in rows:  # rows are sorted best first
        best.setdefault(r.arch, r)
    implemented = [Candidate(r, True, family=get_model_module(r.arch)) for r in best.values() if is_model(r.arch)]
    missing = [Candidate(r, False, status="not implemented") for r in best.values() if not is_model(r.arch)]
    return implemented, missing


# --- 2. measuring: given files, the cache, then runs on demand --------------------------------------

class Measurer:
    """Looks up and takes the measurements of one :func:`select` call (cache, given files, new
    runs) and keeps the count of runs and the rates (GMAC/ms) measured so far."""

    def __init__(self, query: SelectionQuery, log: Callable[[str], None] | None = None) -> None:
        from .measure import BenchConfig

        q = self.query = query
        self.log = log or (lambda s: None)
        self.base_cfg = BenchConfig(batch_size=q.batch_size, train_batch_size=q.train_batch_size, device=q.device,
                                    dtype=q.dtype, channels_last=q.channels_last, threads=q.threads,
                                    optimize=q.optimize,
                                    warmup=q.warmup, repeats=q.repeats, min_time=q.min_time, max_runs=30)
        self.device = self.base_cfg.device
        self.threads = None if self.device.startswith("cuda") else (q.threads or torch.get_num_threads())
        self.given: list[dict[str, Any]] = []
        self.cache: list[dict[str, Any]] = []
        self.runs = 0
        self.rates: list[float] = []  # GMAC per ms of the models measured so far (inference)

    def load(self) -> "Measurer":
        """Read the given result files and this machine's measurement cache."""
        from .cache import load_cache
        from .results import read_results

        self.given = read_results(self.query.measurements) if self.query.measurements else []
        self.cache = load_cache()
        return self

    def conditions(self) -> dict[str, Any]:
        """The conditions and limits as the flat dict :class:`Selection` reports."""
        from .cache import host_id

        q = self.query
        return dict(host=host_id(self.device), device=self.device, threads=self.threads, dtype=q.dtype,
                    channels_last=q.channels_last, optimize=q.optimized,
                    batch_size=q.batch_size, train_batch_size=q.train_batch_size,
                    img_size=q.img_size, timing=q.timing, limits=q.limits)

    def known(self, c: Candidate) -> dict[str, Any]:
        """What the given files (any host) and then this machine's cache know about ``c``."""
        from .cache import lookup

        q = self.query
        from .cache import _TRAIN

        optimized = q.optimized
        kw = dict(device=self.device, threads=self.threads, dtype=q.dtype, channels_last=q.channels_last,
                  infer_batch_size=q.batch_size, train_batch_size=q.train_batch_size)
        out: dict[str, Any] = {}
        for recs, host in ((self.given, "*"), (self.cache, None)):
            found = lookup(c.arch, c.row.img_size, records=recs, host=host, optimized=optimized, **kw) or {}
            out.update({k: v for k, v in found.items() if v is not None and k not in out})
            if optimized:  # optimize() makes an inference model: training is measured on the plain one
                plain = lookup(c.arch, c.row.img_size, records=recs, host=host, optimized=False, **kw) or {}
                out.update({k: v for k, v in plain.items() if k in _TRAIN and v is not None and k not in out})
        return out

    @property
    def can_run(self) -> bool:
        return self.query.run and self.runs < self.query.max_benchmarks

    def rate_bound(self) -> tuple[float, str]:
        """An upper bound of the GMAC/ms any model reaches here: a margin over the matmul peak,
        tightened to a margin over the fastest model measured once a few are known."""
        peak = _PEAK_MARGIN * machine_peak_gmac_per_ms(self.device, self.threads)
        if self.query.dtype == "int8":  # int8 dot products: up to 4x the float32 matmul rate
            peak *= 4
        if len(self.rates) >= 3 and _RATE_MARGIN * max(self.rates) < peak:
            return _RATE_MARGIN * max(self.rates), f"{_RATE_MARGIN:g}x the fastest rate measured here"
        return peak, f"{_PEAK_MARGIN:g}x this machine's matmul peak"

    def measure(self, c: Candidate, mode: str, stop_ms: float | None) -> bool:
        """Run one benchmark of ``c`` (``'infer'`` or ``'train'``); False (with ``c.status`` set
        to ``'unmeasured'`` or ``'error'``) when it was not run or failed."""
        from dataclasses import replace

        from .cache import append_to_cache
        from .measure import measure_model

        if not self.can_run:
            c.status = "unmeasured"
            c.reasons = ["--max-benchmarks reached" if self.query.run else "no measurement (measuring is off)"]
            return False
        cfg = replace(self.base_cfg, mode=mode, img_size=c.row.img_size,
                      infer_stop_above_ms=stop_ms if mode == "infer" else None,
                      train_stop_above_ms=stop_ms if mode == "train" else None)
        self.runs += 1
        rec = measure_model(c.arch, cfg)
        append_to_cache(rec)
        self.cache.append(rec)
        if rec.get("error"):
            c.status, c.reasons = "error", [rec["error"]]
            return False
        c.measured.update({k: v for k, v in rec.items() if v is not None})
        self.log(f"measured {c.arch} ({mode})")
        return True


# --- 3. filtering: static limits, cheap estimates, measured limits -----------------------------------

def _static_reasons(c: Candidate, q: SelectionQuery) -> list[str]:
    reasons = []
    if q.max_gmacs is not None and c.measured["gmacs"] > q.max_gmacs:
        reasons.append(f"{c.measured['gmacs']:.2f} GMACs > {q.max_gmacs}")
    if q.max_params_m is not None and c.value("params_m") > q.max_params_m:
        reasons.append(f"{c.value('params_m'):.1f} M params > {q.max_params_m}")
    return reasons


def _off_the_front(c: Candidate, q: SelectionQuery, feasible: Sequence[Candidate]) -> bool:
    """Once ``top`` models are feasible, a less accurate one can only matter with fewer GMACs."""
    return len(feasible) >= q.top and c.measured["gmacs"] >= min(f.measured["gmacs"] for f in feasible)


def _estimate_rejection(c: Candidate, q: SelectionQuery, m: Measurer) -> str | None:
    """A reason to reject ``c`` from cheap bounds (latency floor, meta-device memory), if any."""
    if q.max_latency_ms is not None and c.measured.get("infer_step_ms") is None and m.can_run:
        bound, why = m.rate_bound()
        floor_ms = c.measured["gmacs"] * q.batch_size / bound
        if floor_ms > q.max_latency_ms:
            return (f"needs >= {floor_ms:.0f} ms: {c.measured['gmacs']:.1f} GMACs at {why} "
                    f"({bound * 1e3:.0f} GMAC/s; estimate, not measured)")
    mem_limit = q.mem_limit_mib
    if mem_limit is not None and q.need_train and c.measured.get("train_peak_mem_mib") is None and m.can_run:
        try:
            pred = predict_train_memory_mib(c.arch, c.row.img_size, q.train_batch_size)
            c.measured["predicted_train_mem_mib"] = pred
        except Exception:  # noqa: BLE001 - prediction is an optimisation only
            pred = None
        if pred is not None and pred > 1.25 * mem_limit:
            return (f"predicted train memory {pred / 1024:.2f} GiB > {q.max_train_memory_gb} "
                    "(meta-device estimate, not measured)")
    return None


def _train_reasons(c: Candidate, q: SelectionQuery) -> list[str]:
    reasons = []
    mem_limit = q.mem_limit_mib
    if mem_limit is not None and c.measured["train_peak_mem_mib"] > mem_limit:
        reasons.append(f"train memory {c.measured['train_peak_mem_mib'] / 1024:.2f} GiB > {q.max_train_memory_gb}")
    step = c.value("train_step_ms" + q.stat)
    if q.max_train_step_ms is not None and step > q.max_train_step_ms:
        reasons.append(f"train step {step:.0f} ms > {q.max_train_step_ms}")
    return reasons


def _rejected(c: Candidate, reasons: list[str], status: str = "rejected") -> str:
    c.status, c.reasons = status, reasons
    return "rejected"


def _unmeasured_or_error(c: Candidate) -> str:
    return "skipped" if c.status == "unmeasured" else "rejected"


def screen_candidate(c: Candidate, q: SelectionQuery, m: Measurer, feasible: Sequence[Candidate]) -> str:
    """Count, bound, measure and check one candidate against the limits.

    Sets ``c.status`` / ``c.reasons`` and returns the list it belongs to: ``'ok'`` (feasible),
    ``'rejected'`` or ``'skipped'``."""
    c.measured = m.known(c)
    try:
        if c.measured.get("gmacs") is None:
            c.measured.update({k: v for k, v in _static_counts(c.arch, c.row.img_size).items() if k != "img_size"})
    except Exception as e:  # noqa: BLE001
        return _rejected(c, [f"cannot build at {c.row.img_size}px: {type(e).__name__}: {e}"], "error")
    reasons = _static_reasons(c, q)
    if reasons:
        return _rejected(c, reasons)
    if _off_the_front(c, q, feasible):
        c.status = "skipped"
        c.reasons = [f"less accurate and more GMACs than {q.top} feasible models: neither ranked nor on the front"]
        return "skipped"
    reason = _estimate_rejection(c, q, m)
    if reason:
        return _rejected(c, [reason])
    if q.need_infer and c.measured.get("infer_step_ms") is None:
        if not m.measure(c, "infer", 1.5 * q.max_latency_ms if q.max_latency_ms else None):
            return _unmeasured_or_error(c)
    latency = c.value("infer_step_ms" + q.stat)
    if latency and c.measured.get("gmacs"):
        m.rates.append(c.measured["gmacs"] * q.batch_size / latency)
    if q.max_latency_ms is not None and latency > q.max_latency_ms:
        return _rejected(c, [f"latency {latency:.1f} ms > {q.max_latency_ms}"])
    if q.need_train and c.measured.get("train_step_ms") is None:
        if not m.measure(c, "train", 1.5 * q.max_train_step_ms if q.max_train_step_ms else None):
            return _unmeasured_or_error(c)
    reasons = _train_reasons(c, q)
    if reasons:
        return _rejected(c, reasons)
    c.status = "ok"
    return "ok"


def screen_candidates(candidates: Sequence[Candidate], q: SelectionQuery, m: Measurer,
                      progress: bool = True) -> tuple[list[Candidate], list[Candidate], list[Candidate]]:
    """Visit the candidates most accurate first; returns (feasible, rejected, skipped)."""
    from tqdm.auto import tqdm

    from .measure import num_threads

    lists: dict[str, list[Candidate]] = {"ok": [], "rejected": [], "skipped": []}
    bar = tqdm(candidates, desc="select", unit="model", disable=not progress, dynamic_ncols=True)
    with num_threads(q.threads):
        for c in bar:
            bar.set_postfix_str(c.arch)
            lists[screen_candidate(c, q, m, lists["ok"])].append(c)
    bar.close()
    return lists["ok"], lists["rejected"], lists["skipped"]


# --- 4. ranking and the Pareto front -----------------------------------------------------------------

def rank(q: SelectionQuery, conditions: dict[str, Any], feasible: list[Candidate], rejected: list[Candidate],
         skipped: list[Candidate], missing: list[Candidate], benchmarks_run: int = 0) -> Selection:
    """Feasible models by accuracy, with the accuracy-vs-cost Pareto front marked."""
    feasible.sort(key=lambda c: -c.top1)
    sel = Selection(query=conditions, cost=q.cost, ranked=feasible, front=[], rejected=rejected, skipped=skipped,
                    not_implemented=missing, benchmarks_run=benchmarks_run, budget=q)
    sel.front = pareto_front(feasible, sel.cost_key)
    for c in sel.front:
        c.on_front = True
    return sel


def select(
    query: SelectionQuery | None = None,
    *,
    plot: str | os.PathLike | None = None,
    reference: str | os.PathLike | Sequence[AccuracyRow] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Selection:
    """Rank implemented models for a budget and find the accuracy-vs-cost Pareto front.

    Pass a :class:`SelectionQuery`, or its fields as keyword arguments
    (``select(max_latency_ms=20, min_top1=80)``); keyword arguments given with a query override
    its fields. The fields:

        max_latency_ms: limit on the inference time of one batch of ``batch_size``.
        max_train_memory_gb: limit on forward+backward peak memory (GiB) at ``train_batch_size``.
        max_train_step_ms: limit on one training step (SGD) at ``train_batch_size``.
        min_top1, max_params_m, max_gmacs: accuracy / size limits (published top-1, %).
        img_size: only results evaluated at this size (and measure at it); default each tag's size.
        threads, device, dtype, channels_last: the conditions to measure under.
        optimize: rank by the latency after :func:`visionzoo.optimize` (its default backend: ONNX
            Runtime where installed), the fast path a deployment uses; ``dtype='int8'`` implies it.
        models, exclude: wildcard filters on ``arch`` or ``arch.tag``. pretrain: keep these
            pre-training sets only (``in1k``, ``in21k``, ... from ``model_metadata-in1k.csv``).
        cost: x axis of the front: ``latency``, ``train-step``, ``train-memory``, ``gmacs``, ``params``.
        timing: ``median`` (default) or ``min`` of the timed runs, for limits, table and front
            (``min`` is the steadier number on a machine shared with other work).
        top: how many feasible models to rank before only front candidates are measured.
        measure_train: measure training too (default: when a training limit or cost asks for it).
        run: measure what is missing (False: use cached / given measurements only).
        max_benchmarks: at most this many models are measured now.
        measurements: extra result files or folders (from ``visionzoo benchmark --out``), any host.
        warmup, repeats, min_time: timing of each benchmark.

    Other arguments:
        plot: write the accuracy-vs-cost plot to this ``.png`` / ``.svg`` file.
        reference: accuracy table to use instead of the shipped one: a folder with a
            ``results-imagenet.csv`` (same columns; siblings optional) or a list of rows.
        progress: show a progress bar. log: called with a line per model measured.
    """
    from dataclasses import replace

    q = replace(query, **kwargs) if query is not None else SelectionQuery(**kwargs)
    m = Measurer(q, log)  # checks the measuring conditions before anything is read
    implemented, missing = gather_candidates(published_rows(q, reference))
    m.load()
    feasible, rejected, skipped = screen_candidates(implemented, q, m, progress)
    sel = rank(q, m.conditions(), feasible, rejected, skipped, missing, m.runs)
    if plot:
        sel.plot(plot)
    return sel
