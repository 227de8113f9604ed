"""Plain-text tables for the terminal."""
from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["format_table"]

_LEFT = {"model", "family", "error", "note", ""}


def format_table(rows: Sequence[Mapping[str, str]], columns: Sequence[str] | None = None) -> str:
    """Align ``rows`` (dicts of strings) in columns; text columns left, numbers right."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        out = []
        for c, v, w in zip(cols, values, widths):
            out.append(v.ljust(w) if c in _LEFT else v.rjust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cols), sep] + [line(r) for r in cells])
