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


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Per-family conformance table (structure / numerics), printed when conformance tests ran."""
    import re
    from collections import defaultdict

    pattern = re.compile(r"test_conformance\.py::test_(structure|numeric)\[([^:\]]+):")
    table: dict = defaultdict(lambda: defaultdict(int))
    for outcome in ("passed", "failed", "skipped", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            m = pattern.search(getattr(rep, "nodeid", ""))
            if m and (rep.when == "call" or outcome in ("skipped", "error")):
                kind, family = m.groups()
                label = outcome
                if outcome == "skipped":
                    why = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
                    label = "budget" if "budget" in why else "structure-only"
                table[family][f"{kind}:{label}"] += 1
    if not table:
        return
    tr = terminalreporter
    tr.section("conformance per family")
    tr.write_line(f"{'family':28} {'structure':>12} {'numeric':>12} {'failed':>7} {'budget':>7} {'no-num':>7}")
    totals: dict = defaultdict(int)
    for family in sorted(table):
        t = table[family]
        for k, v in t.items():
            totals[k] += v
        s_all = t["structure:passed"] + t["structure:failed"] + t["structure:error"]
        n_run = t["numeric:passed"] + t["numeric:failed"] + t["numeric:error"]
        tr.write_line(f"{family:28} {t['structure:passed']:>5}/{s_all:<6} {t['numeric:passed']:>5}/{n_run:<6} "
                      f"{t['structure:failed'] + t['numeric:failed'] + t['numeric:error']:>7} "
                      f"{t['numeric:budget']:>7} {t['numeric:structure-only']:>7}")
    tr.write_line(f"{'total':28} {totals['structure:passed']:>5}/{totals['structure:passed'] + totals['structure:failed']:<6} "
                  f"{totals['numeric:passed']:>5}/{totals['numeric:passed'] + totals['numeric:failed']:<6}")
