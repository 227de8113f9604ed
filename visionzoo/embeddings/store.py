"""Embedding files: atomically committed shards, the merged output (Parquet or ``.npy`` + index) and reading it back.

Layout for ``--out emb.parquet`` (or ``emb.npy``)::

    emb.parquet            merged output (written last, atomically)
    emb.report.json        counts, unreadable images, speed
    emb.parts/             work folder while the run is unfinished (removed after the merge)
        manifest.json      the run's settings and the file list's digest (a resume must match them)
        files.txt          the file list, one path per line (shard i = lines [i*S, (i+1)*S))
        shard-000007.npy   float32 embeddings of shard 7's readable images, in file-list order
        shard-000007.json  its commit record: the paths embedded and the unreadable ones

A shard counts as done only when its ``.json`` record exists. Both files are written to a temp
name, fsynced and renamed (the record after the data), so a run killed at any point leaves either
a whole shard or none, and a resume recomputes exactly the missing ones.
For ``emb.npy`` the merged output is the array plus ``emb.index.json`` (paths and model, with the
library's own formats: ``numpy.save`` and JSON); Parquet goes through pyarrow.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

__all__ = ["Embeddings", "OutputPaths", "output_paths", "atomic_path", "write_json_atomic", "write_shard",
           "read_shard_record", "merge_shards", "remove_parts", "load_embeddings", "FORMATS"]

FORMATS = ("parquet", "npy")
MANIFEST_VERSION = 1


@dataclass
class Embeddings:
    """Embeddings read back from an output file: one row of ``vectors`` per entry of ``paths``."""

    paths: list[str]
    vectors: np.ndarray
    model: str = ""
    tag: str = ""
    normalized: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class OutputPaths:
    """Where one run writes: the merged output, its index (``.npy`` only), report and work folder."""

    out: Path
    fmt: str
    index: Path | None
    report: Path
    parts: Path

    def shard_data(self, i: int) -> Path:
        return self.parts / f"shard-{i:06d}.npy"

    def shard_record(self, i: int) -> Path:
        return self.parts / f"shard-{i:06d}.json"


def output_paths(out: str | os.PathLike) -> OutputPaths:
    """Resolve ``out`` (``*.parquet`` or ``*.npy``) into the files a run writes next to it."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"--out must end in .parquet or .npy, got {str(out)!r}")
    stem = out.with_suffix("")
    index = stem.with_name(stem.name + ".index.json") if fmt == "npy" else None
    return OutputPaths(out=out, fmt=fmt, index=index, report=stem.with_name(stem.name + ".report.json"),
                       parts=stem.with_name(stem.name + ".parts"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; when the body succeeds the file is fsynced and renamed
    onto ``path`` (readers and a killed run see the old file or the whole new one, never a part)."""
    from ..train.checkpoint import _fsync_dir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def write_shard(paths: OutputPaths, i: int, vectors: np.ndarray, embedded: Sequence[str],
                failed: Sequence[tuple[str, str]]) -> None:
    """Commit shard ``i``: the array first, then the record that marks it done."""
    if len(vectors) != len(embedded):
        raise ValueError(f"shard {i}: {len(vectors)} vectors for {len(embedded)} paths")
    with atomic_path(paths.shard_data(i)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, dtype=np.float32))
    write_json_atomic(paths.shard_record(i), {"shard": i, "embedded": list(embedded),
                                              "failed": [{"path": p, "error": e} for p, e in failed],
                                              "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0})


def read_shard_record(paths: OutputPaths, i: int) -> dict[str, Any] | None:
    """Shard ``i``'s commit record, or ``None`` when the shard is not done."""
    try:
        return json.loads(paths.shard_record(i).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _parquet():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("Parquet output needs pyarrow: pip install 'visionzoo[embed]' (or use --out FILE.npy)") from e
    return pa, pq


def merge_shards(paths: OutputPaths, num_shards: int, meta: dict[str, Any]) -> int:
    """Concatenate shards ``0..num_shards-1`` in order into the output; returns the row count.

    Streams shard by shard (memory stays at one shard). ``meta`` (model, tag, normalized, ...) goes
    into the Parquet schema metadata / the ``.npy`` index file.
    """
    records = [read_shard_record(paths, i) for i in range(num_shards)]
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:
        raise RuntimeError(f"cannot merge: shard(s) {missing[:10]} not done")
    dims = {r["dim"] for r in records if r["embedded"]}
    if len(dims) > 1:
        raise RuntimeError(f"shards disagree on the embedding size: {sorted(dims)}")
    dim = dims.pop() if dims else int(meta.get("dim") or 0)
    total = sum(len(r["embedded"]) for r in records)
    model, tag = str(meta.get("model", "")), str(meta.get("tag", ""))
    if paths.fmt == "parquet":
        pa, pq = _parquet()
        schema = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32(), dim)),
                            ("model", pa.string()), ("tag", pa.string())],
                           metadata={b"visionzoo": json.dumps(meta).encode()})
        with atomic_path(paths.out) as tmp:
            with pq.ParquetWriter(tmp, schema) as writer:
                for i, r in enumerate(records):
                    if not r["embedded"]:
                        continue
                    vec = np.load(paths.shard_data(i))
                    n = len(r["embedded"])
                    emb = pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1), type=pa.float32()), dim)
                    writer.write_table(pa.Table.from_arrays(
                        [pa.array(r["embedded"], pa.string()), emb, pa.array([model] * n, pa.string()),
                         pa.array([tag] * n, pa.string())], schema=schema))
    else:
        with atomic_path(paths.out) as tmp:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
            row = 0
            for i, r in enumerate(records):
                if r["embedded"]:
                    vec = np.load(paths.shard_data(i))
                    arr[row:row + len(vec)] = vec
                    row += len(vec)
            arr.flush()
            del arr
        write_json_atomic(paths.index, {**meta, "dim": dim, "count": total,
                                        "paths": [p for r in records for p in r["embedded"]]})
    return total


def remove_parts(paths: OutputPaths) -> None:
    """Drop the work folder once the merged output is safely in place."""
    shutil.rmtree(paths.parts, ignore_errors=True)


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read an output of :func:`visionzoo.embed` (``.parquet``, or ``.npy`` with its ``.index.json``)."""
    p = output_paths(path)
    if not p.out.exists():
        raise FileNotFoundError(f"embeddings not found: {p.out}")
    if p.fmt == "parquet":
        pa, pq = _parquet()
        table = pq.read_table(p.out)
        raw = (table.schema.metadata or {}).get(b"visionzoo")
        meta = json.loads(raw) if raw else {}
        col = table.column("embedding").combine_chunks()
        dim = col.type.list_size if hasattr(col.type, "list_size") else int(meta.get("dim", 0))
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        vectors = flat.reshape(-1, dim) if dim else np.zeros((len(table), 0), np.float32)
        paths = table.column("path").to_pylist()
        models, tags = table.column("model").to_pylist(), table.column("tag").to_pylist()
        model = meta.get("model") or (models[0] if models else "")
        tag = meta.get("tag") or (tags[0] if tags else "")
    else:
        if not p.index.exists():
            raise FileNotFoundError(f"{p.out} has no index file {p.index.name} (written with the array)")
        meta = json.loads(p.index.read_text(encoding="utf-8"))
        paths = meta.pop("paths")
        vectors = np.load(p.out, mmap_mode="r")
        model, tag = meta.get("model", ""), meta.get("tag", "")
    if len(paths) != len(vectors):
        raise ValueError(f"{p.out}: {len(vectors)} vectors for {len(paths)} paths")
    return Embeddings(paths=paths, vectors=np.asarray(vectors, dtype=np.float32), model=model, tag=tag,
                      normalized=bool(meta.get("normalized", False)), meta=meta)
