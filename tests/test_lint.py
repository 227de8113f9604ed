"""Static check: pyflakes' rules (via ruff) over the package, benchmarks, tools and tests.

An undefined name or a def lost in an edit (code left dangling after a ``return``) passes every
import and most tests; ruff reports the names it leaves undefined. Configured in pyproject.toml.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_pyflakes_rules_are_clean():
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    try:
        res = subprocess.run(cmd + ["check", "--output-format", "concise", "visionzoo", "benchmarks", "tools", "tests"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    assert res.returncode == 0, res.stdout + res.stderr
