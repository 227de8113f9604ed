"""Metrics: top-k accuracy, running averages, a per-epoch CSV and a plot of the curves.

The plot is an SVG drawn here (no plotting dependency); a PNG is added when matplotlib is installed.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

__all__ = ["topk_correct", "AverageMeter", "write_csv", "read_csv", "plot_metrics"]


@torch.no_grad()
def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k logits, for each k (k capped at K)."""
    maxk = min(max(ks), logits.shape[-1])
    pred = logits.topk(maxk, dim=-1).indices
    hit = pred.eq(target.view(-1, 1))
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


class AverageMeter:
    """Running sum / count."""

    def __init__(self) -> None:
        self.sum, self.count = 0.0, 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else float("nan")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(round(v, 6)) if math.isfinite(v) else ""
    return "" if v is None else str(v)


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """(Re)write the whole metrics CSV atomically; columns are the union of the rows' keys in order."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in cols])
    _atomic_write_text(Path(path), buf.getvalue())


def read_csv(path: str | os.PathLike) -> list[dict[str, float | str]]:
    """Rows of a metrics CSV with numbers converted to float (empty cells -> NaN)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            conv: dict[str, float | str] = {}
            for k, v in row.items():
                try:
                    conv[k] = float(v) if v != "" else float("nan")
                except ValueError:
                    conv[k] = v
            out.append(conv)
    return out


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def _panel(series: dict[str, list[tuple[float, float]]], x0: float, title: str, w: float = 420,
           h: float = 300) -> str:
    """One SVG line chart (axes, ticks, legend) at horizontal offset ``x0``."""
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    if not pts:
        return ""
    xmin, xmax = min(p[0] for p in pts), max(p[0] for p in pts)
    ymin, ymax = min(p[1] for p in pts), max(p[1] for p in pts)
    if xmax == xmin:
        xmax = xmin + 1
    if ymax == ymin:
        ymax = ymin + 1
    pad = 0.05 * (ymax - ymin)
    ymin, ymax = ymin - pad, ymax + pad
    L, T, R, B = x0 + 55, 30, x0 + w - 10, h - 35

    def sx(x: float) -> float:
        return L + (x - xmin) / (xmax - xmin) * (R - L)

    def sy(y: float) -> float:
        return B - (y - ymin) / (ymax - ymin) * (B - T)

    out = [f'<text x="{(L + R) / 2:.1f}" y="18" text-anchor="middle" font-size="14">{title}</text>',
           f'<rect x="{L}" y="{T}" width="{R - L}" height="{B - T}" fill="none" stroke="#444"/>']
    for i in range(5):
        yv = ymin + (ymax - ymin) * i / 4
        out.append(f'<text x="{L - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end" font-size="10">{yv:.3g}</text>')
        out.append(f'<line x1="{L}" x2="{R}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#ddd"/>')
    n_ticks = min(6, int(xmax - xmin) + 1)
    for i in range(n_ticks):
        xv = xmin + (xmax - xmin) * i / max(1, n_ticks - 1)
        out.append(f'<text x="{sx(xv):.1f}" y="{B + 14}" text-anchor="middle" font-size="10">{xv:.3g}</text>')
    out.append(f'<text x="{(L + R) / 2:.1f}" y="{h - 5}" text-anchor="middle" font-size="11">epoch</text>')
    for i, (name, s) in enumerate(series.items()):
        s = [p for p in s if math.isfinite(p[1])]
        if not s:
            continue
        c = _COLORS[i % len(_COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in s:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{c}"/>')
        out.append(f'<text x="{R - 6}" y="{T + 16 + 14 * i}" text-anchor="end" font-size="11" fill="{c}">{name}</text>')
    return "\n".join(out)


def plot_metrics(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, stem: str = "metrics") -> list[Path]:
    """Draw loss and accuracy curves per epoch to ``stem.svg`` (and ``stem.png`` with matplotlib)."""
    out_dir = Path(out_dir)

    def series(key: str) -> list[tuple[float, float]]:
        res = []
        for r in rows:
            try:
                res.append((float(r["epoch"]), float(r[key])))
            except (KeyError, TypeError, ValueError):
                pass
        return res

    loss = {k: series(k) for k in ("train_loss", "val_loss", "ema_val_loss") if series(k)}
    acc = {k: series(k) for k in ("train_top1", "val_top1", "val_top5", "ema_val_top1") if series(k)}
    written = []
    body = _panel(loss, 0, "loss") + "\n" + _panel(acc, 430, "accuracy (%)")
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="860" height="300" font-family="sans-serif">\n'
           f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')
    _atomic_write_text(out_dir / f"{stem}.svg", svg)
    written.append(out_dir / f"{stem}.svg")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return written
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, group, title in ((axes[0], loss, "loss"), (axes[1], acc, "accuracy (%)")):
        for name, s in group.items():
            ax.plot([p[0] for p in s], [p[1] for p in s], marker="o", ms=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if group:
            ax.legend()
    fig.tight_layout()
    tmp = out_dir / f".{stem}.tmp{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_dir / f"{stem}.png")
    written.append(out_dir / f"{stem}.png")
    return written
