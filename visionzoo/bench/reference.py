"""Published ImageNet-1k results, shipped as package data in ``bench/reference/``.

The CSVs are the public timm results tables (``results-imagenet.csv``, its robustness siblings and
``model_metadata-in1k.csv``), trimmed to the columns used here by :func:`trim_reference`:

* ``results-imagenet.csv``: model (``arch.tag``), img_size, top1, top5, param_count, crop_pct, interpolation
* ``results-imagenet-real.csv``, ``-imagenetv2-matched-frequency``, ``-sketch``, ``-imagenet-a``,
  ``-imagenet-r``: model, img_size, top1
* ``model_metadata-in1k.csv``: model (architecture), pretrain (the pre-training data set)

Regenerate with ``python -m visionzoo.bench.reference SRC_DIR`` (``SRC_DIR`` holding the full tables).
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["AccuracyRow", "load_accuracy", "ROBUSTNESS_SETS", "trim_reference", "REFERENCE_DIR"]

REFERENCE_DIR = Path(__file__).parent / "reference"
MAIN_FILE = "results-imagenet.csv"
# column suffix -> file
ROBUSTNESS_SETS = {
    "real": "results-imagenet-real.csv",
    "v2": "results-imagenetv2-matched-frequency.csv",
    "sketch": "results-sketch.csv",
    "a": "results-imagenet-a.csv",
    "r": "results-imagenet-r.csv",
}
METADATA_FILE = "model_metadata-in1k.csv"
_MAIN_COLUMNS = ("model", "img_size", "top1", "top5", "param_count", "crop_pct", "interpolation")
_SIBLING_COLUMNS = ("model", "img_size", "top1")


@dataclass
class AccuracyRow:
    """One published result: a pretrained tag evaluated at one image size."""

    model: str  # arch.tag
    img_size: int
    top1: float
    top5: float
    param_count: float  # millions
    crop_pct: float | None = None
    interpolation: str | None = None
    pretrain: str | None = None  # from model_metadata-in1k.csv, e.g. 'in1k', 'in21k'
    robustness: dict[str, float] = field(default_factory=dict)  # set -> top1

    @property
    def arch(self) -> str:
        return self.model.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.model.split(".", 1)[1] if "." in self.model else ""


def _num(s: str | None) -> float | None:
    if s is None or not s.strip():
        return None
    return float(s.replace(",", ""))


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@lru_cache(maxsize=4)
def _load(directory: str) -> tuple[AccuracyRow, ...]:
    d = Path(directory)
    meta = {r["model"]: r["pretrain"] for r in _read(d / METADATA_FILE)} if (d / METADATA_FILE).exists() else {}
    extra: dict[tuple[str, int], dict[str, float]] = {}
    for key, fname in ROBUSTNESS_SETS.items():
        if (d / fname).exists():
            for r in _read(d / fname):
                top1 = _num(r.get("top1"))
                if top1 is not None:
                    extra.setdefault((r["model"], int(r["img_size"])), {})[key] = top1
    rows = []
    for r in _read(d / MAIN_FILE):
        size = int(r["img_size"])
        arch = r["model"].split(".", 1)[0]
        rows.append(AccuracyRow(
            model=r["model"], img_size=size, top1=float(r["top1"]), top5=float(r["top5"]),
            param_count=_num(r.get("param_count")) or 0.0, crop_pct=_num(r.get("crop_pct")),
            interpolation=r.get("interpolation") or None, pretrain=meta.get(arch),
            robustness=extra.get((r["model"], size), {}),
        ))
    return tuple(rows)


def load_accuracy(directory: str | Path | None = None) -> list[AccuracyRow]:
    """All published ImageNet-1k results (one row per tag and evaluation size), best first."""
    rows = list(_load(str(directory or REFERENCE_DIR)))
    return sorted(rows, key=lambda r: -r.top1)


def trim_reference(src: str | Path, dst: str | Path = REFERENCE_DIR) -> list[Path]:
    """Copy the reference tables from ``src`` keeping only the columns used (see module doc)."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    jobs: list[tuple[str, tuple[str, ...]]] = [(MAIN_FILE, _MAIN_COLUMNS), (METADATA_FILE, ("model", "pretrain"))]
    jobs += [(f, _SIBLING_COLUMNS) for f in ROBUSTNESS_SETS.values()]
    for fname, cols in jobs:
        rows: list[dict[str, Any]] = _read(src / fname)
        with open(dst / fname, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            for r in rows:
                if "param_count" in r:
                    r["param_count"] = r["param_count"].replace(",", "")
                w.writerow(r)
        written.append(dst / fname)
    _load.cache_clear()
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m visionzoo.bench.reference SRC_DIR")
    for p in trim_reference(sys.argv[1]):
        print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
