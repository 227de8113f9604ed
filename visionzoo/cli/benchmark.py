"""``visionzoo benchmark``: params, GMACs, activations, inference speed, training time and memory."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .completion import model_completer, set_completer
from .errors import Interrupted


def add_benchmark_arguments(p: argparse.ArgumentParser) -> None:
    set_completer(p.add_argument("models", nargs="+", metavar="MODEL|FILTER",
                                 help="model names (resnet50, resnet50.a1_in1k) or wildcard filters ('convnext_*')"),
                  model_completer())
    set_completer(p.add_argument("--exclude", nargs="*", default=[], metavar="PATTERN",
                                 help="drop models matching these"), model_completer())
    p.add_argument("--batch-size", "-b", type=int, default=1,
                   help="inference batch size; latency = time of one batch (default 1)")
    p.add_argument("--train-batch-size", type=int, default=None, help="training batch size (default: --batch-size)")
    p.add_argument("--img-size", type=int, default=None, help="square input size (default: each model's own)")
    p.add_argument("--mode", choices=("infer", "train", "both"), default="both", help="what to time (default both)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "int8"), default="float32",
                   help="bfloat16: model cast for inference, autocast for training; int8: inference through "
                        "ONNX Runtime static int8 (implies --optimize and --mode infer)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--optimize", action="store_true",
                   help="time inference after visionzoo.inference.optimize (skipped when unavailable)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls at least (default 5)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls at least (default 1)")
    p.add_argument("--max-runs", type=int, default=50, help="timed calls at most (default 50)")
    p.add_argument("--out", default=None, help="append results to this .csv / .json / .jsonl as they complete")
    p.add_argument("--no-cache", action="store_true", help="do not store results in the measurement cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the results as one JSON array of records")


def _row(r: dict[str, Any]) -> dict[str, str]:
    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    infer = "-" if r.get("infer_step_ms") is None else f"{r['infer_step_ms']:.2f}±{(r.get('infer_step_ms_iqr') or 0) / 2:.2f}"
    train = "-" if r.get("train_step_ms") is None else f"{r['train_step_ms']:.1f}±{(r.get('train_step_ms_iqr') or 0) / 2:.1f}"
    return {"model": r["model"], "img": f(r.get("img_size"), "d"),
            "params M": f(r["params"] / 1e6 if r.get("params") is not None else None, ".2f"),
            "GMACs": f(r.get("gmacs"), ".3f"), "acts M": f(r.get("macts"), ".2f"),
            "infer ms": infer, "img/s": f(r.get("infer_samples_per_sec"), ".1f"),
            "train ms": train, "train img/s": f(r.get("train_samples_per_sec"), ".1f"),
            "train MiB": f(r.get("train_peak_mem_mib"), ".0f"), "error": r.get("error") or ""}


def run_benchmark(args: argparse.Namespace) -> int:
    from ..bench.measure import BenchmarkInterrupted, benchmark
    from ..bench.table import format_table

    interrupted = False
    try:
        results = benchmark(
            args.models, batch_size=args.batch_size, train_batch_size=args.train_batch_size, img_size=args.img_size,
            mode=args.mode, channels_last=args.channels_last, dtype=args.dtype, device=args.device,
            threads=args.threads, optimize=args.optimize, warmup=args.warmup, repeats=args.repeats,
            min_time=args.min_time, max_runs=args.max_runs, exclude=args.exclude, out=args.out,
            cache=not args.no_cache, progress=not args.no_progress,
        )
    except BenchmarkInterrupted as e:
        results, interrupted = e.results, True
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    elif results:
        r0 = results[0]
        print(f"# {r0['host']}, {r0['device']}, {r0.get('threads') or '-'} threads, {r0['dtype']}"
              f"{', channels_last' if r0['channels_last'] else ''}; inference batch {args.batch_size}, "
              f"training batch {args.train_batch_size or args.batch_size}; times are medians ± half the IQR")
        print(format_table([_row(r) for r in results]))
    if args.out and results and not interrupted:  # on Ctrl-C the one "interrupted" line says it
        print(f"# results appended to {args.out}", file=sys.stderr)
    if interrupted:  # main prints the one line and exits 130
        kept = [w for w, on in (("the cache", not args.no_cache), (args.out, bool(args.out))) if on]
        raise Interrupted(f"{len(results)} model(s) measured" + (f" and kept in {' and '.join(kept)}" if kept else ""))
    return 1 if results and all(r.get("error") for r in results) else 0
