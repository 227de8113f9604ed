"""Benchmark representative models of every implemented family on this machine.

    python benchmarks/run_benchmarks.py                      # 2 threads, 224 px, -> benchmarks/results/
    python benchmarks/run_benchmarks.py --threads 4 --train-batch-size 32 --out my.csv

Each model is measured with ``visionzoo.benchmark``: inference at batch 1 (latency) and a training
step (SGD, forward + backward + update) at ``--train-batch-size`` with its peak memory. Results are
appended to the CSV as they complete and also go to the measurement cache, so ``visionzoo select``
uses them right away. A ``.meta.json`` beside the CSV records the machine, settings and the load
average before and after the run: on a shared machine timings are only as good as that load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import visionzoo
from visionzoo.bench.cache import host_id

# small / medium members of each family (names not registered yet are skipped)
REPRESENTATIVE = [
    "resnet18", "resnet34", "resnet50", "resnet50d", "resnetv2_50",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "tf_efficientnet_lite0", "efficientnetv2_rw_t",
    "mobilenetv2_100", "lcnet_100",
    "mobilenetv3_large_100", "mobilenetv3_small_100", "mobilenetv4_conv_small", "mobilenetv4_conv_medium",
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "convnext_atto", "convnext_pico", "convnext_nano", "convnext_tiny", "swin_tiny_patch4_window7_224",
    "regnetx_004", "regnetx_016", "regnety_008", "regnety_016",
    "ese_vovnet19b_dw", "ese_vovnet39b", "densenet121", "densenet169", "vgg11",
    # the CPU-first hybrids and MetaFormers (issue 17): the smallest one or two of each family
    "poolformer_s12", "poolformerv2_s12", "convformer_s18", "caformer_s18", "mambaout_femto", "mambaout_kobe",
    "cpubone_nano", "cpubone_s0", "iformer_t", "repvit_m0_9", "repvit_m1_0", "efficientvim_m1", "lowformer_b0",
    "starnet_s1", "starnet_s3", "fasternet_t0", "fasternet_t1", "edgenext_xx_small", "edgenext_x_small",
    "efficientformerv2_s0", "efficientformerv2_s1", "efficientformer_l1", "shvit_s1", "shvit_s2",
    "swiftformer_xs", "swiftformer_s", "inception_next_atto", "rdnet_tiny", "convmixer_1024_20_ks9_p14",
    "mobilenetv5_base",
]
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=REPRESENTATIVE, help="names or filters (default: representative set)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=1, help="inference batch (default 1: latency)")
    p.add_argument("--train-batch-size", type=int, default=8)
    p.add_argument("--mode", default="both", choices=("infer", "train", "both"))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed calls at least (training: 3)")
    p.add_argument("--min-time", type=float, default=0.5)
    p.add_argument("--out", default=None, help="CSV (default benchmarks/results/cpu-<threads>threads-<size>.csv)")
    args = p.parse_args(argv)

    names = [m for m in args.models if "*" in m or visionzoo.is_model(m)]
    missing = [m for m in args.models if m not in names]
    if missing:
        print(f"not implemented yet, skipped: {', '.join(missing)}", file=sys.stderr)
    out = Path(args.out or RESULTS / f"cpu-{args.threads}threads-{args.img_size}px.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        host=host_id("cpu"), cpu_count=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
        torch=torch.__version__, threads=args.threads, img_size=args.img_size, infer_batch_size=args.batch_size,
        train_batch_size=args.train_batch_size, warmup=args.warmup, repeats=args.repeats, min_time_s=args.min_time,
        models=names, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
        loadavg_before=os.getloadavg() if hasattr(os, "getloadavg") else None,
        note="timings taken on a machine shared with other jobs; compare loadavg with cpu_count "
             "(a load above the core count means the medians are inflated and noisy)",
    )
    t0 = time.perf_counter()
    try:
        visionzoo.benchmark(names, img_size=args.img_size, batch_size=args.batch_size,
                            train_batch_size=args.train_batch_size, mode=args.mode, threads=args.threads,
                            device="cpu", warmup=args.warmup, repeats=args.repeats, min_time=args.min_time, out=out)
    finally:
        meta.update(finished=time.strftime("%Y-%m-%dT%H:%M:%S"), wall_s=round(time.perf_counter() - t0, 1),
                    loadavg_after=os.getloadavg() if hasattr(os, "getloadavg") else None)
        # rows are appended to the CSV, so the meta file keeps every run's conditions (newest last)
        meta_path = out.with_suffix(".meta.json")
        runs = []
        if meta_path.exists():
            try:
                prev = json.loads(meta_path.read_text())
                runs = prev.get("runs", [prev]) if isinstance(prev, dict) else []
            except ValueError:
                runs = []
        meta_path.write_text(json.dumps({"runs": runs + [meta]}, indent=1) + "\n")
    print(f"results: {out}\nmeta:    {out.with_suffix('.meta.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
