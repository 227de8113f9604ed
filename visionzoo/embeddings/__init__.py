"""Embeddings at scale: :func:`embed` (folders -> resumable, sharded Parquet / ``.npy``, one process
or many under torchrun), :func:`load_embeddings`, and faiss similarity search / near-duplicate
groups (:func:`build_index`, :func:`search`, :func:`dedup_groups`). See docs/embeddings.md.

Imported lazily: ``import visionzoo.embeddings`` loads neither torch nor pyarrow nor faiss.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "embed": "visionzoo.embeddings.run",
    "embed_images": "visionzoo.embeddings.run",
    "list_images": "visionzoo.embeddings.run",
    "build_embedder": "visionzoo.embeddings.run",
    "load_embeddings": "visionzoo.embeddings.store",
    "Embeddings": "visionzoo.embeddings.store",
    "build_index": "visionzoo.embeddings.similarity",
    "search": "visionzoo.embeddings.similarity",
    "dedup_groups": "visionzoo.embeddings.similarity",
    "VectorIndex": "visionzoo.embeddings.similarity",
}

__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
