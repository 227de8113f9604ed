"""Benchmark records: the field list, appending writers (CSV / JSON / JSON lines) and readers."""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["FIELDS", "CONFIG_FIELDS", "ResultWriter", "read_results", "parse_record"]

# what identifies a measurement's conditions (cache key, matching of result files)
CONFIG_FIELDS = ("model", "img_size", "device", "threads", "dtype", "channels_last", "optimized")

FIELDS = (
    "model", "family", "img_size",
    "params", "gmacs", "macts",
    "infer_batch_size", "infer_step_ms", "infer_step_ms_iqr", "infer_step_ms_min", "infer_runs", "infer_samples_per_sec",
    "train_batch_size", "train_step_ms", "train_step_ms_iqr", "train_step_ms_min", "train_runs", "train_samples_per_sec",
    "train_peak_mem_mib", "train_mem_method",
    "device", "threads", "dtype", "channels_last", "optimized", "host", "torch", "timestamp", "note", "error",
)
_INT = {"params", "img_size", "infer_batch_size", "infer_runs", "train_batch_size", "train_runs", "threads"}
_FLOAT = {"gmacs", "macts", "infer_step_ms", "infer_step_ms_iqr", "infer_step_ms_min", "infer_samples_per_sec",
          "train_step_ms", "train_step_ms_iqr", "train_step_ms_min", "train_samples_per_sec", "train_peak_mem_mib"}
_BOOL = {"channels_last", "optimized"}


def parse_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed record from a CSV row or JSON object: numbers parsed, empty strings -> ``None``."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if v is None or (isinstance(v, str) and v.strip() == ""):
            out[k] = None
        elif k in _INT:
            out[k] = int(float(v))
        elif k in _FLOAT:
            out[k] = float(v)
        elif k in _BOOL:
            out[k] = v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes")
        else:
            out[k] = v
    return out


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        if not math.isfinite(v):
            return ""
        return float(f"{v:.6g}")
    return "" if v is None else v


class ResultWriter:
    """Appends one record at a time, so an interrupted run keeps what it measured.

    ``.csv`` appends rows (the header is written once; an existing file must have the same
    columns), ``.jsonl`` appends lines, ``.json`` rewrites a list atomically after each record.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.kind = self.path.suffix.lower().lstrip(".")
        if self.kind not in ("csv", "json", "jsonl"):
            raise ValueError(f"--out {str(path)!r}: use a .csv, .json or .jsonl file name")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._json: list[dict[str, Any]] = []
        if self.kind == "csv" and self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != FIELDS:
                raise ValueError(f"{self.path} has other columns than visionzoo benchmark results; "
                                 "choose another --out file")
        elif self.kind == "json" and self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, list):
                raise ValueError(f"{self.path} is not a JSON list of results; choose another --out file")
            self._json = data

    def write(self, record: Mapping[str, Any]) -> None:
        row = {k: _fmt(record.get(k)) for k in FIELDS}
        if self.kind == "csv":
            new = not self.path.exists() or self.path.stat().st_size == 0
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=FIELDS)
                if new:
                    w.writeheader()
                w.writerow(row)
        elif self.kind == "jsonl":
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({k: (None if v == "" else v) for k, v in row.items()}) + "\n")
        else:
            self._json.append({k: (None if v == "" else v) for k, v in row.items()})
            tmp = self.path.with_suffix(".json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._json, f, indent=1)
            os.replace(tmp, self.path)


def _read_file(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return [parse_record(r) for r in csv.DictReader(f)]
    if suffix == ".jsonl":
        out = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(parse_record(json.loads(line)))
                    except json.JSONDecodeError:
                        continue  # a line cut short by an interrupted write
        return out
    if suffix == ".json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return [parse_record(r) for r in (data if isinstance(data, list) else [data])]
    raise ValueError(f"{path}: benchmark results must be .csv, .json or .jsonl")


def read_results(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Records from result files, or from every result file in a directory."""
    records: list[dict[str, Any]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.suffix.lower() in (".csv", ".json", ".jsonl") and not f.name.endswith(".meta.json"):
                    records += [r for r in _read_file(f) if "model" in r]
        elif p.exists():
            records += _read_file(p)
        else:
            raise FileNotFoundError(f"no benchmark results at {str(p)!r}")
    return records
