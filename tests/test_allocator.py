"""The malloc tuning that ``optimize`` applies: it must remove the page faults it is there for,
respect the user's own allocator settings, and be reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from visionzoo.deploy import allocator
from visionzoo.deploy.allocator import malloc_skip_reason

GLIBC = allocator.malloc_skip_reason({}) is None

# eager ViT-S/16 forwards at batch 1 (activations of 0.3-1.2 MB in many sizes); prints the minor
# page faults per forward after two warm-up calls
_PATTERN = r"""
import json, resource, sys, torch
import visionzoo
from visionzoo.deploy.allocator import tune_malloc
result = tune_malloc() if sys.argv[1] == "tune" else "default"
torch.set_num_threads(1)
model = visionzoo.create_model("vit_small_patch16_224").eval()
x = torch.randn(1, 3, 224, 224)
with torch.inference_mode():
    for _ in range(2):
        model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        model(x)
print(json.dumps({"result": result, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3}))
"""


def _run_pattern(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VISIONZOO_MALLOC", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _PATTERN, mode], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
def test_tuning_removes_the_page_faults_of_repeated_activations():
    default, tuned = _run_pattern("default"), _run_pattern("tune")
    assert tuned["result"].startswith("tuned"), tuned
    # untuned: 2.5-6.7k faults (4 KiB pages zeroed by the kernel) per forward measured
    assert default["faults"] > 1000, default
    assert tuned["faults"] < default["faults"] / 20, (default, tuned)


@pytest.mark.parametrize("env, reason", [
    ({"VISIONZOO_MALLOC": "default"}, "VISIONZOO_MALLOC"),
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "jemalloc"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000"}, "configured in the environment"),
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "configured in the environment"),
])
def test_user_allocator_settings_are_left_alone(env, reason):
    why = malloc_skip_reason(env)
    if not GLIBC:
        assert why == "not glibc malloc"
    else:
        assert why is not None and reason in why


def test_tune_malloc_runs_once_and_reports(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value.value))
            return 1

    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setattr(allocator, "_libc", FakeLibc)
    monkeypatch.setattr(allocator, "malloc_skip_reason", lambda environ=None: None)
    first = allocator.tune_malloc(mmap_threshold=8 << 20, trim_threshold=16 << 20)
    assert first == "tuned (mmap threshold 8 MiB, trim threshold 16 MiB)"
    assert calls == [(allocator.M_MMAP_THRESHOLD, 8 << 20), (allocator.M_TRIM_THRESHOLD, 16 << 20)]
    assert allocator.tune_malloc() == first and len(calls) == 2  # process-wide: applied once


def test_thresholds_must_fit_a_c_int():
    with pytest.raises(ValueError, match="mmap_threshold"):
        allocator.tune_malloc(mmap_threshold=4 << 30)
    with pytest.raises(ValueError, match="trim_threshold"):
        allocator.tune_malloc(trim_threshold=0)


def test_refused_thresholds_are_reported(monkeypatch):
    class RefusingLibc:
        def mallopt(self, param, value):
            return 0

    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setattr(allocator, "_libc", RefusingLibc)
    monkeypatch.setattr(allocator, "malloc_skip_reason", lambda environ=None: None)
    assert allocator.tune_malloc() == "skipped: mallopt refused the thresholds"


def test_optimize_reports_the_allocator_and_can_leave_it(monkeypatch):
    from visionzoo.deploy.inference import optimize

    monkeypatch.setattr(allocator, "_state", {"result": "tuned (test)"})
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    example = torch.randn(1, 3, 8, 8)
    on = optimize(net, backend="torch", dtype="float32", example=example)
    assert on.report["malloc"] == "tuned (test)"
    off = optimize(torch.nn.Sequential(torch.nn.Linear(3, 2)), backend="torch", dtype="float32",
                   example=torch.randn(2, 3), tune_malloc=False)
    assert "malloc" not in off.report


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
def test_release_memory_calls_malloc_trim():
    assert isinstance(allocator.release_memory(), bool)
