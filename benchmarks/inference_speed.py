"""Eager vs ``visionzoo.optimize`` CPU throughput, per family representative.

    python benchmarks/inference_speed.py                       # the default table
    python benchmarks/inference_speed.py --models resnet50 --batch-sizes 1 --compile
    python benchmarks/inference_speed.py --threads 1 --output benchmarks/results/inference_speed.md

Variants (each on a fresh model with the same random weights):

* ``eager``: ``model.eval()`` under ``torch.inference_mode()``, float32, NCHW;
* ``opt fp32``: ``optimize(model, dtype=torch.float32)``, float32 with the default backend
  (``'auto'``: ONNX Runtime where installed, else the torch path);
* ``torch fp32``: ``optimize(model, dtype=torch.float32, backend='torch')``: BN folding,
  channels-last, fused attention in eager PyTorch;
* ``opt``: ``optimize(model)``, the default: float32 as ``opt fp32``, or the torch path in bfloat16
  when the CPU has native bfloat16;
* ``opt+jit``: the default plus ``jit=True`` (per-shape traced, frozen TorchScript graph);
* ``opt+compile`` (``--compile``): the default plus ``torch.compile`` (Inductor, freezing);
* ``fp32+compile``: ``torch fp32`` plus ``torch.compile`` (Inductor, freezing), float32;
* ``ort`` (``--ort``): ``optimize(model, backend='onnxruntime')``: the float graph in ONNX Runtime;
* ``auto`` (``--ort``): ``optimize(model, backend='auto')``: per family, the faster of the two;
* ``int8`` (``--int8``): ``optimize(model, dtype='int8', calibration=...)``: ONNX Runtime static
  int8, calibrated on the example photos (speed only: the weights are random here).

Eager and optimized runs are interleaved in short windows and the best window of each is kept,
which makes the ratios robust to other processes sharing the CPU. Throughput is images/s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

REPS = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "vit_small_patch16_224", "convnext_tiny",
        "regnety_016"]
CNNS = {"resnet50", "efficientnet_b0", "mobilenetv3_large_100", "convnext_tiny", "regnety_016"}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_variant(name: str, variant: str, x: torch.Tensor) -> tuple[Callable[[torch.Tensor], Any], dict[str, Any]]:
    import visionzoo
    from visionzoo.inference import optimize

    torch.manual_seed(0)
    model = visionzoo.create_model(name).eval()
    if variant == "eager":
        return model, {}
    kwargs: dict[str, Any] = dict(example=x[:1])
    if variant == "opt fp32":
        kwargs["dtype"] = torch.float32
    if variant == "torch fp32":
        kwargs.update(dtype=torch.float32, backend="torch")
    if variant == "opt+compile":
        kwargs["compile"] = True
    if variant == "fp32+compile":
        kwargs.update(dtype=torch.float32, backend="torch", compile=True)
    if variant == "opt+jit":
        kwargs["jit"] = True
    if variant in ("ort", "auto"):
        kwargs.update(dtype=torch.float32, backend="onnxruntime" if variant == "ort" else "auto")
    if variant == "int8":
        kwargs = dict(dtype="int8", calibration=str(Path(__file__).resolve().parents[1] / "examples" / "images"))
    fast = optimize(model, **kwargs)
    return fast, dict(fast.report)


def time_window(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, seconds: float, min_iters: int) -> float:
    """Images/s over one window of at least ``seconds`` and ``min_iters`` calls."""
    n = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        while True:
            fn(x)
            n += 1
            elapsed = time.perf_counter() - t0
            if n >= min_iters and elapsed >= seconds:
                return n * x.shape[0] / elapsed


def bench_model(name: str, batch_size: int, variants: list[str], windows: int, seconds: float) -> dict[str, Any]:
    import visionzoo

    cfg = visionzoo.get_pretrained_cfg(name)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    x = torch.randn(batch_size, *size)
    fns, reports, first = {}, {}, {}
    for v in variants:
        fn, report = make_variant(name, v, x)
        t0 = time.perf_counter()
        with torch.inference_mode():
            fn(x)  # first call: compiles when compiling
            fn(x)
        first[v] = time.perf_counter() - t0
        fns[v], reports[v] = fn, dict(getattr(fn, "report", report))  # after the first calls (jit)
    best = {v: 0.0 for v in variants}
    for _ in range(windows):  # interleaved windows, best kept
        for v in variants:
            best[v] = max(best[v], time_window(fns[v], x, seconds, 2))
    return {"model": name, "batch_size": batch_size, "input_size": list(size), "throughput": best,
            "warmup_s": first, "reports": reports}


def markdown(rows: list[dict[str, Any]], variants: list[str], meta: dict[str, Any]) -> str:
    lines = ["# Inference speed: eager vs `visionzoo.optimize` (CPU)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "Throughput in images/s (best of the interleaved windows); x = ratio to eager.", ""]
    head = ["model", "batch", "eager"]
    for v in variants[1:]:
        head += [v, "x"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t = r["throughput"]
        cells = [r["model"], str(r["batch_size"]), f"{t['eager']:.1f}"]
        for v in variants[1:]:
            cells += [f"{t[v]:.1f}", f"**{t[v] / t['eager']:.2f}**"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "What `optimize` applied (batch 1 run; `jit_traced_shapes` counts the shapes traced so far;",
              "`export_s`: the one-off ONNX export + session start inside `optimize`; `first_two_calls_s`: the",
              "first two calls after it):", ""]
    seen = set()
    for r in rows:
        if r["model"] in seen:
            continue
        seen.add(r["model"])
        for v in variants[1:]:
            rep = {k: val for k, val in r["reports"].get(v, {}).items() if k != "prepare_s"}
            rep["first_two_calls_s"] = round(r["warmup_s"].get(v, float("nan")), 2)
            lines.append(f"- {r['model']} / {v}: " + ", ".join(f"{k}={val}" for k, val in rep.items()))
    if any("opt+compile" in r["warmup_s"] for r in rows):
        lines += ["", "First two calls (compile time included) of `opt+compile`, seconds: " +
                  ", ".join(f"{r['model']}@{r['batch_size']}: {r['warmup_s']['opt+compile']:.0f}" for r in rows)]
    lines += ["", "Geometric-mean speed-up over all models (goal: fp32 >= 1.5x at batch 1 and 8, none < 1.2x):", ""]
    for v in variants[1:]:
        for bs in sorted({r["batch_size"] for r in rows}):
            ratios = [r["throughput"][v] / r["throughput"]["eager"] for r in rows if r["batch_size"] == bs]
            gm = float(torch.tensor(ratios).log().mean().exp())
            lines.append(f"- {v}, batch {bs}: {gm:.2f}x (min {min(ratios):.2f}x)")
    cnn = [r for r in rows if r["model"] in CNNS]
    if cnn:
        lines += ["", "Geometric-mean speed-up over the CNNs (goal: int8 >= 2.5x at batch 8):", ""]
        for v in variants[1:]:
            for bs in sorted({r["batch_size"] for r in cnn}):
                ratios = [r["throughput"][v] / r["throughput"]["eager"] for r in cnn if r["batch_size"] == bs]
                gm = float(torch.tensor(ratios).log().mean().exp())
                lines.append(f"- {v}, batch {bs}: {gm:.2f}x (min {min(ratios):.2f}x)")
    return "\n".join(lines) + "\n"


def _strip_note(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--note":
            out.append("--note ...")
            skip = True
            continue
        out.append("--note ..." if a.startswith("--note=") else a)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=REPS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time optimize(compile=True)")
    p.add_argument("--ort", action="store_true", help="also time the ONNX Runtime backend and backend='auto'")
    p.add_argument("--int8", action="store_true", help="also time ONNX Runtime static int8")
    p.add_argument("--variants", nargs="+", default=None, help="exactly these variants (eager is always first)")
    p.add_argument("--windows", type=int, default=3, help="interleaved timing windows per variant")
    p.add_argument("--seconds", type=float, default=2.0, help="minimum length of one window")
    p.add_argument("--output", default=None, help="write the markdown table here")
    p.add_argument("--json", default=None, help="write raw results here")
    p.add_argument("--note", default="", help="free text added to the conditions")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    from visionzoo.inference import bf16_supported

    variants = ["eager", "opt fp32", "torch fp32", "opt", "opt+jit"] + (["opt+compile"] if args.compile else []) \
        + (["ort", "auto"] if args.ort else []) + (["int8"] if args.int8 else [])
    if args.variants:
        variants = ["eager"] + [v for v in args.variants if v != "eager"]
    meta = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu_name()}, {os.cpu_count()} logical cores, native bf16: {bf16_supported()}",
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
        "python": platform.python_version(),
        "command": "python benchmarks/inference_speed.py " + " ".join(
            a for a in _strip_note(argv if argv is not None else sys.argv[1:])),
        "load average at start (1/5/15 min)": load_avg(),
    }
    if args.note:
        meta["note"] = args.note
    rows = []
    for name in args.models:
        for bs in args.batch_sizes:
            r = bench_model(name, bs, variants, args.windows, args.seconds)
            rows.append(r)
            t = r["throughput"]
            print(f"{name:24s} bs{bs:<3d} " + "  ".join(f"{v}: {t[v]:7.1f}" for v in variants) +
                  "  ratios " + " ".join(f"{t[v] / t['eager']:.2f}" for v in variants[1:]), flush=True)
    meta["load average at end"] = load_avg()
    text = markdown(rows, variants, meta)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
