"""Accuracy-vs-cost plots of a :class:`~visionzoo.bench.select.Selection`: matplotlib and text."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .select import Candidate, Selection

__all__ = ["plot_selection", "ascii_chart"]


def _points(sel: "Selection") -> tuple[str, list["Candidate"], list["Candidate"]]:
    key = sel.cost_key
    ok = [c for c in sel.ranked if c.value(key) is not None]
    bad = [c for c in sel.rejected if c.value(key) is not None and c.status == "rejected"]
    return key, ok, bad


def _limit(sel: "Selection") -> float | None:
    lim = sel.query["limits"]
    if sel.cost == "latency":
        return lim.get("max_latency_ms")
    if sel.cost == "train-step":
        return lim.get("max_train_step_ms")
    if sel.cost == "train-memory" and lim.get("max_train_memory_gb"):
        return lim["max_train_memory_gb"] * 1024
    if sel.cost == "gmacs":
        return lim.get("max_gmacs")
    if sel.cost == "params":
        return lim.get("max_params_m")
    return None


def plot_selection(sel: "Selection", path: Path, title: str | None = None) -> Path:
    """Write the scatter (feasible models by family, rejected ones grey, front joined) to ``path``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'visionzoo[bench]'") from e
    from .select import COSTS

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"plot file {str(path)!r}: use a .png, .svg or .pdf name")
    key, ok, bad = _points(sel)
    fig = Figure(figsize=(9, 6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    if bad:
        ax.scatter([c.value(key) for c in bad], [c.top1 for c in bad], marker="x", s=22, color="0.7",
                   label="measured, over a limit")
    families = sorted({c.family or "?" for c in ok})
    colors = {f: f"C{i % 10}" for i, f in enumerate(families)}
    for fam in families:
        pts = [c for c in ok if (c.family or "?") == fam]
        ax.scatter([c.value(key) for c in pts], [c.top1 for c in pts], s=30, color=colors[fam], label=fam,
                   zorder=3, edgecolors="none")
    if sel.front:
        xs = [c.value(key) for c in sel.front]
        ys = [c.top1 for c in sel.front]
        ax.step(xs, ys, where="post", color="k", lw=1.0, alpha=0.6, zorder=2, label="Pareto front")
        ax.scatter(xs, ys, s=70, facecolors="none", edgecolors="k", zorder=4)
        for c in sel.front:
            ax.annotate(c.name, (c.value(key), c.top1), xytext=(4, 4), textcoords="offset points", fontsize=7)
    values = [c.value(key) for c in ok + bad]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_xscale("log")
    limit = _limit(sel)
    if limit is not None:
        ax.axvline(limit, color="C3", ls="--", lw=1, label="limit")
    if sel.query["limits"].get("min_top1") is not None:
        ax.axhline(sel.query["limits"]["min_top1"], color="C3", ls=":", lw=1)
    q = sel.query
    stat = " (min of runs)" if sel.query.get("timing") == "min" and sel.cost_key.endswith("_min") else ""
    ax.set_xlabel(COSTS[sel.cost][1] + stat + (f", batch {q['batch_size']}" if sel.cost == "latency" else
                                        f", batch {q['train_batch_size']}" if sel.cost.startswith("train") else ""))
    ax.set_ylabel("ImageNet-1k top-1 (%)")
    ax.set_title(title or f"visionzoo select: {q['host']}, {q['device']}, {q['threads']} threads, {q['dtype']}",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def ascii_chart(sel: "Selection", width: int = 72, height: int = 18) -> str:
    """Character scatter: ``*`` Pareto front, ``o`` other feasible models, ``x`` over a limit."""
    from .select import COSTS

    key, ok, bad = _points(sel)
    pts = [(c.value(key), c.top1, "*" if c.on_front else "o") for c in ok]
    pts += [(c.value(key), c.top1, "x") for c in bad]
    if not pts:
        return "(nothing measured to chart)"
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    log = min(xs) > 0 and max(xs) / min(xs) > 20
    tx = (lambda v: math.log10(v)) if log else (lambda v: v)
    x0, x1 = tx(min(xs)), tx(max(xs))
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    grid = [[" "] * width for _ in range(height)]
    prio = {"x": 0, "o": 1, "*": 2}
    for x, y, ch in sorted(pts, key=lambda p: prio[p[2]]):
        col = round((tx(x) - x0) / (x1 - x0) * (width - 1))
        row = height - 1 - round((y - y0) / (y1 - y0) * (height - 1))
        grid[row][col] = ch
    lines = [f"top-1 (%) vs {COSTS[sel.cost][1]}{' (log scale)' if log else ''}"]
    for i, r in enumerate(grid):
        label = f"{y1:6.1f}" if i == 0 else f"{y0:6.1f}" if i == height - 1 else " " * 6
        lines.append(f"{label} |{''.join(r)}")
    lines.append(" " * 7 + "+" + "-" * width)
    lo, hi = _fmt(min(xs)), _fmt(max(xs))
    lines.append(" " * 8 + lo + " " * max(1, width - len(lo) - len(hi)) + hi)
    lines.append(" " * 8 + "* Pareto front   o meets the limits   x over a limit")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"
