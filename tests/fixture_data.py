"""The conformance fixtures, decoded once per test process.

Several test modules read the same fixtures at collection time (structure, numerics, interface,
export, cfgs, features layout); decoding ~80 MB of JSON five times per xdist worker cost minutes
of CI. Records are shared: callers must not mutate them. After each decode the (long-lived)
objects are moved out of the garbage collector's sight (``gc.freeze``) so that every later full
collection does not traverse millions of fixture values again.
"""
from __future__ import annotations

import gc
import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

try:  # optional, ~2x faster decode
    import orjson as _orjson
except ImportError:  # pragma: no cover - the stdlib decoder gives the same objects
    _orjson = None

FIXTURES = Path(__file__).parent / "fixtures"
LAYOUTS = FIXTURES / "features_state_dict"


def _load(path: Path) -> dict[str, Any]:
    raw = gzip.decompress(path.read_bytes())
    data = _orjson.loads(raw) if _orjson is not None else json.loads(raw)
    gc.freeze()
    return data


@lru_cache(maxsize=None)
def records(family: str) -> list[dict[str, Any]]:
    """Every record of ``tests/fixtures/<family>.json.gz`` (``[]`` when there is no fixture)."""
    path = FIXTURES / f"{family}.json.gz"
    return _load(path)["models"] if path.exists() else []


@lru_cache(maxsize=None)
def layout_records(family: str) -> Any:
    """Every record of ``tests/fixtures/features_state_dict/<family>.json.gz``."""
    path = LAYOUTS / f"{family}.json.gz"
    return _load(path)["models"] if path.exists() else []
