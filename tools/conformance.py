"""Full numeric conformance: every fixture record of every implemented family, in one run.

CI checks structure and cfgs of every record but numerics only within a budget (see
``NUMERIC_BUDGET`` in tests/test_conformance.py). This runs them all and prints a per-family table
(structure passed/total, numerics passed/run, failures, structure-only records)::

    python3 tools/conformance.py                 # all families, 2 xdist workers
    python3 tools/conformance.py -k "eva:"       # extra pytest arguments are passed through
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    env = dict(os.environ, VISIONZOO_CONFORMANCE="full")
    workers = [] if any(a.startswith("-n") for a in argv) else ["-n", str(min(4, os.cpu_count() or 1))]
    cmd = [sys.executable, "-m", "pytest", "tests/test_conformance.py", "-q", *workers, *argv]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
