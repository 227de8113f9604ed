"""Similarity search and near-duplicate groups over embeddings, with faiss (cosine similarity).

Vectors are L2-normalised before indexing, so the inner product faiss computes is the cosine
similarity. Small sets use an exact index (``IndexFlatIP``: every vector compared); above
``exact_max`` vectors the default is an HNSW graph (``IndexHNSWFlat``), approximate but sub-linear
per query and with no training step, so any set size works the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["VectorIndex", "build_index", "search", "dedup_groups", "unit_rows", "EXACT_MAX", "INDEX_KINDS"]

EXACT_MAX = 20_000  # above this many vectors "auto" builds an approximate (HNSW) index
INDEX_KINDS = ("auto", "exact", "hnsw")


@dataclass
class VectorIndex:
    """A faiss index and which kind it is (``exact`` or ``hnsw``)."""

    index: Any
    kind: str

    def __len__(self) -> int:
        return int(self.index.ntotal)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:
        raise ImportError("similarity search needs faiss: pip install 'visionzoo[embed]' (faiss-cpu)") from e
    return faiss


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, C-contiguous as faiss wants); zero rows stay zero."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, 1e-12), dtype=np.float32)


def build_index(vectors: np.ndarray, kind: str = "auto", exact_max: int = EXACT_MAX, hnsw_m: int = 32,
                ef_search: int = 128) -> VectorIndex:
    """A faiss index over the unit-normalised ``vectors``: exact up to ``exact_max`` rows (``auto``),
    HNSW above."""
    faiss = _faiss()
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
    x = unit_rows(vectors)
    if x.ndim != 2 or not len(x):
        raise ValueError("no embeddings to index")
    if kind == "auto":
        kind = "exact" if len(x) <= exact_max else "hnsw"
    if kind == "exact":
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        index.hnsw.efSearch = ef_search
    index.add(x)
    return VectorIndex(index, kind)


def search(vindex: VectorIndex, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(similarities, row ids)``, each ``(len(queries), k)``, best first; id -1 where fewer exist."""
    if k < 1:
        raise ValueError("k must be at least 1")
    index, q = vindex.index, unit_rows(queries)
    if q.shape[1] != index.d:
        raise ValueError(f"query embeddings have {q.shape[1]} features, the index {index.d}: "
                         "were they made with the same model?")
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None and hnsw.efSearch < k:
        hnsw.efSearch = k
    return index.search(q, min(k, index.ntotal))


def dedup_groups(vectors: np.ndarray, threshold: float, vindex: VectorIndex | None = None, k: int = 16,
                 chunk: int = 4096) -> list[list[int]]:
    """Groups (row ids, sorted) of images whose cosine similarity is at least ``threshold``.

    Pairs above the threshold are linked and each connected component of two or more rows is a
    group (so A~B and B~C put A, B, C together). An exact index finds every pair (range search);
    an approximate one looks at each row's ``k`` nearest neighbours only.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"the dedup threshold is a cosine similarity in [-1, 1], got {threshold}")
    x = unit_rows(vectors)
    vindex = build_index(x) if vindex is None else vindex
    index = vindex.index
    parent = list(range(len(x)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def link(a: np.ndarray, b: np.ndarray) -> None:
        for i, j in zip(a.tolist(), b.tolist()):
            if j >= 0 and i != j:
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)

    radius = float(np.nextafter(np.float32(threshold), np.float32(-2)))  # faiss keeps scores > radius
    for start in range(0, len(x), chunk):
        q = x[start:start + chunk]
        if vindex.kind == "exact":
            lims, _, ids = index.range_search(q, radius)
            rows = np.repeat(np.arange(start, start + len(q)), np.diff(lims).astype(np.int64))
            link(rows, ids)
        else:
            sims, ids = index.search(q, min(k + 1, index.ntotal))
            rows = np.repeat(np.arange(start, start + len(q))[:, None], ids.shape[1], axis=1)
            keep = sims >= threshold
            link(rows[keep], ids[keep])
    groups: dict[int, list[int]] = {}
    for i in range(len(x)):
        groups.setdefault(root(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])
