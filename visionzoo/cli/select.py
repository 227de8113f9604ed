"""``visionzoo select``: rank implemented models for an accuracy / latency / memory budget."""
from __future__ import annotations

import argparse
import csv
import json
import sys

from .completion import model_completer, set_completer


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits")
    g.add_argument("--max-latency-ms", type=float, default=None, help="inference time of one batch (ms)")
    g.add_argument("--max-train-memory-gb", type=float, default=None,
                   help="forward+backward peak memory at --train-batch-size (GiB)")
    g.add_argument("--max-train-step-ms", type=float, default=None, help="one SGD training step (ms)")
    g.add_argument("--min-top1", type=float, default=None, help="published ImageNet-1k top-1 (%%)")
    g.add_argument("--max-params", type=float, default=None, metavar="M", help="parameters (millions)")
    g.add_argument("--max-gmacs", type=float, default=None, help="GMACs per image")
    c = p.add_argument_group("conditions")
    c.add_argument("--img-size", type=int, default=None,
                   help="only results evaluated at this size (default: each tag at its own size)")
    c.add_argument("--batch-size", "-b", type=int, default=1, help="inference batch size (default 1)")
    c.add_argument("--train-batch-size", type=int, default=32, help="training batch size (default 32)")
    c.add_argument("--threads", type=int, default=None, help="torch threads, e.g. 2 for a 2-core budget")
    c.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    c.add_argument("--dtype", choices=("float32", "bfloat16", "int8"), default="float32",
                   help="precision measured (default float32); int8: inference latency of the ONNX Runtime int8 "
                        "graph (training limits do not apply)")
    c.add_argument("--channels-last", action="store_true", help="measure in NHWC memory format")
    c.add_argument("--optimize", action="store_true",
                   help="rank by inference latency after visionzoo.optimize (the deployed fast path; "
                        "ONNX Runtime where installed)")
    c.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    c.add_argument("--repeats", type=int, default=5, help="timed inference calls at least (default 5)")
    c.add_argument("--min-time", type=float, default=0.5, help="seconds of timed calls at least (default 0.5)")
    s = p.add_argument_group("candidates and output")
    set_completer(s.add_argument("--models", nargs="*", default=[], metavar="FILTER",
                                 help="only these (wildcards on arch or arch.tag)"), model_completer())
    set_completer(s.add_argument("--exclude", nargs="*", default=[], metavar="FILTER", help="drop these"),
                  model_completer())
    s.add_argument("--pretrain", nargs="*", default=[], help="only these pre-training sets, e.g. in1k in21k")
    s.add_argument("--cost", default="latency", choices=("latency", "train-step", "train-memory", "gmacs", "params"),
                   help="x axis of the Pareto front (default latency)")
    s.add_argument("--timing", choices=("median", "min"), default="median",
                   help="which time of the repeated runs to use (min is steadier on a busy machine)")
    s.add_argument("--top", type=int, default=10, help="rank this many models (default 10)")
    s.add_argument("--train", action="store_true", help="measure training even without a training limit")
    s.add_argument("--no-run", action="store_true", help="use cached / given measurements only")
    s.add_argument("--max-benchmarks", type=int, default=30, help="measure at most this many models now (default 30)")
    s.add_argument("--measurements", nargs="*", default=[], metavar="PATH",
                   help="result files or folders from `visionzoo benchmark --out` (e.g. benchmarks/results)")
    s.add_argument("--reference", default=None, metavar="DIR",
                   help="accuracy tables to use instead of the shipped ImageNet results (results-imagenet.csv)")
    s.add_argument("--plot", default=None, metavar="FILE", help="write the accuracy-vs-cost plot (.png or .svg)")
    s.add_argument("--out", default=None, metavar="FILE", help="write every candidate to a .csv or .json file")
    s.add_argument("--robustness", action="store_true", help="show ImageNet-ReaL/v2/Sketch/A/R top-1 columns")
    s.add_argument("--no-chart", action="store_true", help="no text chart")
    s.add_argument("--json", action="store_true", help="print the candidates as one JSON array of records")
    s.add_argument("--no-progress", action="store_true", help="no progress bar while measuring")


def run_select(args: argparse.Namespace) -> int:
    from ..bench.select import select

    sel = select(
        max_latency_ms=args.max_latency_ms, max_train_memory_gb=args.max_train_memory_gb,
        max_train_step_ms=args.max_train_step_ms, min_top1=args.min_top1, max_params_m=args.max_params,
        max_gmacs=args.max_gmacs, img_size=args.img_size, batch_size=args.batch_size,
        train_batch_size=args.train_batch_size, threads=args.threads, device=args.device, dtype=args.dtype,
        channels_last=args.channels_last, optimize=args.optimize, models=args.models, exclude=args.exclude,
        pretrain=args.pretrain,
        cost=args.cost, timing=args.timing, top=args.top, measure_train=True if args.train else None, run=not args.no_run,
        max_benchmarks=args.max_benchmarks, measurements=args.measurements, plot=args.plot,
        reference=args.reference,
        warmup=args.warmup, repeats=args.repeats, min_time=args.min_time, progress=not args.no_progress,
    )
    records = sel.records()
    if args.out:
        if args.out.lower().endswith(".json"):
            with open(args.out, "w", encoding="utf-8") as f:
                json.dump(records, f, indent=1, default=str)
        elif args.out.lower().endswith(".csv"):
            cols = list(dict.fromkeys(k for r in records for k in r))
            with open(args.out, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=cols)
                w.writeheader()
                w.writerows(records)
        else:
            raise ValueError(f"--out {args.out!r}: use a .csv or .json file name")
        print(f"# candidates written to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps(records, indent=1, default=str))
    else:
        print(sel.report(top=args.top, robustness=args.robustness, chart=not args.no_chart))
    return 0
