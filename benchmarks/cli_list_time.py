"""Whole-process time of ``visionzoo list`` (and friends), like ``hyperfine --runs N``.

    python benchmarks/cli_list_time.py [--runs 21] [--baseline DIR] [--output FILE.md]

Each case runs ``--runs`` times in a fresh process (after one untimed run to warm the page cache);
reported: median / min / max wall time and the median CPU time (user + sys of the child, which a
busy machine inflates far less than wall time). ``python -X importtime`` of ``visionzoo list``
shows which modules it loads: torch must not be one of them. ``--baseline DIR`` also times an
older checkout of the package (``DIR/visionzoo``, e.g. from ``git archive``) for comparison.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

PY = sys.executable


def _console_script() -> list[str]:
    exe = shutil.which("visionzoo")
    real = os.path.join(os.path.dirname(PY), "visionzoo")  # the pip wrapper, not a pyenv shim
    return [real] if os.path.exists(real) else ([exe] if exe else [PY, "-m", "visionzoo"])


def _time(cmd: list[str], runs: int) -> tuple[float, float, float, float]:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    walls, cpus = [], []
    for _ in range(runs):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return statistics.median(walls), min(walls), max(walls), statistics.median(cpus)


def _importtime(cmd: list[str]) -> tuple[bool, list[tuple[str, float]], float]:
    r = subprocess.run([PY, "-X", "importtime", *cmd], capture_output=True, text=True, check=True)
    rows = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cum_us, name = line[len("import time:"):].split("|", 2)
        rows.append((name.strip(), int(self_us) / 1e6))
    torch = any(n == "torch" or n.startswith("torch.") for n, _ in rows)
    total = sum(s for _, s in rows)
    vz = sorted(((n, s) for n, s in rows if n.startswith("visionzoo")), key=lambda x: -x[1])
    return torch, vz, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--baseline", default=None, metavar="DIR", help="older checkout holding visionzoo/")
    ap.add_argument("--output", default=None, metavar="FILE.md")
    args = ap.parse_args()

    script = _console_script()
    cases = [
        ("`python3 -c pass` (interpreter floor)", [PY, "-c", "pass"]),
        ("`python3 -c 'import torch'` (what a torch import costs)", [PY, "-c", "import torch"]),
        ("**`visionzoo list`**", script + ["list"]),
        ("`visionzoo list 'convnext*' --pretrained`", script + ["list", "convnext*", "--pretrained"]),
        ("`visionzoo list --pretrained --json`", script + ["list", "--pretrained", "--json"]),
        ("`python3 -m visionzoo list`", [PY, "-m", "visionzoo", "list"]),
        ("`visionzoo --version`", script + ["--version"]),
    ]
    if args.baseline:
        code = (f"import sys; sys.path.insert(0, {args.baseline!r}); sys.argv[1:] = ['list']; "
                "from visionzoo.cli.main import main; sys.exit(main())")
        cases.append(("before (baseline checkout): `visionzoo list`", [PY, "-c", code]))
    load0 = os.getloadavg()
    rows = []
    for label, cmd in cases:
        med, lo, hi, cpu = _time(cmd, args.runs)
        rows.append(f"| {label} | {med:.3f} | {lo:.3f} – {hi:.3f} | {cpu:.3f} |")
        print(rows[-1], flush=True)
    load1 = os.getloadavg()
    torch_loaded, vz, total = _importtime(script + ["list"] if script[0] != PY else ["-m", "visionzoo", "list"])

    lines = [
        "# `visionzoo list`: whole-process time",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"python {platform.python_version()}, {os.cpu_count()} logical cores, {platform.machine()}",
        f"- load average before / after: {load0[0]:.1f} / {load1[0]:.1f} (1-minute)",
        f"- command: `python benchmarks/cli_list_time.py --runs {args.runs}"
        f"{' --baseline DIR' if args.baseline else ''}`",
        f"- {args.runs} fresh processes per row after one untimed warm-up run; stdout to /dev/null; "
        "console script = the pip-generated `bin/visionzoo` (not a pyenv shim, which adds its own bash start-up)",
        "",
        "| command | median wall s | min – max wall s | median CPU s (user+sys) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"`python -X importtime visionzoo list`: torch imported: **{torch_loaded}**; all imports "
        f"{total:.3f} s self time, visionzoo modules {sum(s for _, s in vz):.3f} s:",
        "",
        "| module | self s |",
        "|---|---|",
        *[f"| {n} | {s:.4f} |" for n, s in vz[:10]],
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
