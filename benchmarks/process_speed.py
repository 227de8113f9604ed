"""What ``optimize`` changes for a whole process: untouched eager vs an optimized process, alternated.

    python benchmarks/process_speed.py --output benchmarks/results/process_speed.md

``optimize`` also tunes glibc's malloc for the process (``visionzoo.deploy.allocator``): freed
activation memory is kept for the next call instead of being faulted in afresh. That speeds up every
model in the process, the eager one too, so the same-process tables of ``inference_speed.py``
(eager timed after ``optimize`` ran) leave it out. Here each round runs two fresh processes per model:

* ``untouched``: ``create_model`` + eager forwards, nothing else imported or tuned;
* ``optimized``: the same model, then ``optimize(model_copy, dtype=float32)`` (default backend),
  timing the eager model again (now on the tuned allocator) and the optimized one.

Rounds alternate the two processes; per round the ratio is taken, the median over rounds reported,
with minor page faults per forward next to each time. Throughput is the best of short windows.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from inference_speed import REPS, cpu_name, load_avg  # noqa: E402


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _measure(fn: Any, x: Any, windows: int, seconds: float) -> dict[str, float]:
    """Best window's ms per forward and the minor page faults per forward over all windows."""
    import torch

    with torch.inference_mode():
        fn(x)
        fn(x)
        best, calls, f0 = float("inf"), 0, _faults()
        for _ in range(windows):
            n, t0 = 0, time.perf_counter()
            while n < 2 or time.perf_counter() - t0 < seconds:
                fn(x)
                n += 1
            best = min(best, (time.perf_counter() - t0) / n)
            calls += n
    return {"ms": best * 1e3, "faults": (_faults() - f0) / calls}


def worker(mode: str, model_name: str, batch_sizes: list[int], threads: int, windows: int, seconds: float) -> dict:
    import torch

    import visionzoo

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = visionzoo.create_model(model_name).eval()
    cfg = visionzoo.get_pretrained_cfg(model_name)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    xs = {b: torch.randn(b, *size) for b in batch_sizes}
    out: dict[str, Any] = {"mode": mode}
    if mode == "untouched":
        for b, x in xs.items():
            out[f"eager b{b}"] = _measure(model, x, windows, seconds)
        return out
    from visionzoo import optimize

    fast = optimize(copy.deepcopy(model), dtype=torch.float32, example=xs[batch_sizes[0]][:1])
    out["malloc"] = fast.report.get("malloc")
    for b, x in xs.items():  # interleaved: eager (tuned allocator), optimized, again
        runs = [_measure(f, x, 1, seconds) for f in (model, fast) * windows]
        out[f"eager b{b}"] = min(runs[0::2], key=lambda r: r["ms"])
        out[f"opt b{b}"] = min(runs[1::2], key=lambda r: r["ms"])
    out["backend_by_shape"] = fast.report.get("backend_by_shape")
    return out


def _spawn(mode: str, model: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--models", model, "--threads", str(args.threads),
           "--windows", str(args.windows), "--seconds", str(args.seconds),
           "--batch-sizes", *map(str, args.batch_sizes)]
    env = {k: v for k, v in os.environ.items() if k != "VISIONZOO_MALLOC"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode:
        raise RuntimeError(f"{mode} {model} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], meta: dict[str, Any]) -> str:
    lines = ["# Whole-process inference speed: untouched eager vs `optimize` (CPU)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "ms per forward (median over rounds of each round's best window) and minor page faults per "
              "forward; `x untouched` = untouched eager / optimized, per round, median (rounds listed); "
              "`x in-process` = eager / optimized inside the optimized process (both on the tuned allocator).", "",
              "| model | batch | untouched eager ms (faults) | tuned eager ms (faults) | optimized ms (faults) "
              "| x untouched | rounds | x in-process |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def cell(key: str) -> str:
            return f"{statistics.median(v['ms'] for v in r[key]):.1f} ({statistics.median(v['faults'] for v in r[key]):.0f})"
        lines.append(f"| {r['model']} | {r['batch_size']} | {cell('untouched')} | {cell('tuned_eager')} | "
                     f"{cell('opt')} | **{r['x_untouched']:.2f}** | {' / '.join(f'{v:.2f}' for v in r['rounds'])} | "
                     f"{r['x_in_process']:.2f} |")
    lines += ["", "Geometric means of `x untouched` (goal: >= 1.5x at batch 1 and 8, none < 1.2x):", ""]
    for b in sorted({r["batch_size"] for r in rows}):
        xs = [r["x_untouched"] for r in rows if r["batch_size"] == b]
        lines.append(f"- batch {b}: {statistics.geometric_mean(xs):.2f}x (min {min(xs):.2f}x)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=REPS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="alternations of the two processes per model")
    p.add_argument("--windows", type=int, default=2, help="timing windows per variant in a process")
    p.add_argument("--seconds", type=float, default=1.5, help="minimum length of one window")
    p.add_argument("--worker", choices=["untouched", "optimized"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.models[0], args.batch_sizes, args.threads, args.windows,
                                args.seconds)))
        return 0
    import torch

    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": f"{cpu_name()}, {os.cpu_count()} logical cores",
            "torch": f"{torch.__version__}, {args.threads} threads", "python": platform.python_version(),
            "command": "python benchmarks/process_speed.py " + " ".join(a for a in (argv or sys.argv[1:])),
            "load average at start (1/5/15 min)": load_avg()}
    if args.note:
        meta["note"] = args.note
    rows, raw = [], []
    for name in args.models:
        per_b: dict[int, dict[str, list]] = {b: {"untouched": [], "tuned_eager": [], "opt": [], "rounds": []}
                                             for b in args.batch_sizes}
        for rnd in range(args.rounds):
            first, second = ("untouched", "optimized") if rnd % 2 == 0 else ("optimized", "untouched")
            got = {m: _spawn(m, name, args) for m in (first, second)}
            raw.append({"model": name, "round": rnd, **got})
            for b in args.batch_sizes:
                d = per_b[b]
                d["untouched"].append(got["untouched"][f"eager b{b}"])
                d["tuned_eager"].append(got["optimized"][f"eager b{b}"])
                d["opt"].append(got["optimized"][f"opt b{b}"])
                d["rounds"].append(d["untouched"][-1]["ms"] / d["opt"][-1]["ms"])
            print(f"{name} round {rnd}: " + ", ".join(
                f"b{b} {per_b[b]['untouched'][-1]['ms']:.1f} -> {per_b[b]['opt'][-1]['ms']:.1f} ms" for b in args.batch_sizes),
                flush=True)
        for b, d in per_b.items():
            rows.append({"model": name, "batch_size": b, **d, "x_untouched": statistics.median(d["rounds"]),
                         "x_in_process": statistics.median(e["ms"] / o["ms"] for e, o in zip(d["tuned_eager"], d["opt"]))})
    meta["load average at end"] = load_avg()
    text = markdown(rows, meta)
    print(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows, "raw": raw}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
