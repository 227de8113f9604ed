import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _usable_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup v2 CPU quota if one is set."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            n = min(n, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return n


# One share of the CPUs per xdist worker: torch's default (one thread per visible core, in every
# worker) oversubscribes the machine, and on a container that sees the host's cores, badly.
torch.set_num_threads(max(1, _usable_cpus() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def pytest_sessionfinish(session, exitstatus):
    """A run that collects nothing must fail, not pass silently (pytest's exit 5 -> 1)."""
    if session.testscollected == 0 or exitstatus == 5:
        session.exitstatus = 1
