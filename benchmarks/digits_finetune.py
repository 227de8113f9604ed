"""Fine-tune a backbone with ``in_chans=1`` on scikit-learn's bundled digits (real, offline data).

scikit-learn ships ``load_digits``: 1797 8×8 grayscale handwritten digits (UCI ML hand-written digits,
test set). They are written as an image folder (stratified 80/20 train/val split, seed 0) and
trained through the same path as ``visionzoo train`` (package transforms, DataLoader workers,
checkpoints, metrics CSV + plot). Each run is recorded as JSON in ``benchmarks/results/digits_finetune/``
and ``benchmarks/results/digits_finetune.md`` is rendered from all of them.

    python benchmarks/digits_finetune.py                      # resnet10t, 32 px, 10 epochs
    python benchmarks/digits_finetune.py --model tf_efficientnet_lite0.pypi_in1k --pretrained --epochs 4

The equivalent command line is printed and recorded with the result.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from visionzoo.data.dataset import builtin_dataset_dir
from visionzoo.train import TrainConfig, read_csv, train

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet10t")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--output", default=None, help="run directory (default: /tmp/visionzoo-digits-<model>)")
    p.add_argument("--results", default=str(HERE / "results" / "digits_finetune.md"))
    p.add_argument("--results-dir", default=str(HERE / "results" / "digits_finetune"), help="per-run JSON records")
    args = p.parse_args(argv)
    args.output = args.output or f"/tmp/visionzoo-digits-{args.model.replace('/', '_')}"

    data = builtin_dataset_dir("digits")
    n_train = sum(1 for _ in (data / "train").rglob("*.png"))
    n_val = sum(1 for _ in (data / "val").rglob("*.png"))
    cfg = TrainConfig(model=args.model, pretrained=args.pretrained, dataset="digits", in_chans=1,
                      img_size=args.img_size, crop_pct=1.0, scale=(0.7, 1.0), ratio=(0.9, 1.1), hflip=0.0,
                      epochs=args.epochs, batch_size=args.batch_size, opt="adamw", lr=args.lr, weight_decay=0.05,
                      warmup=1.0, sched="cosine", label_smoothing=0.1, workers=args.workers, threads=args.threads,
                      output=args.output, progress=False, seed=0)
    cmd = (f"visionzoo train --model {args.model}{' --pretrained' if args.pretrained else ''} --dataset digits "
           f"--in-chans 1 --img-size {args.img_size} --crop-pct 1.0 --scale 0.7 1.0 --ratio 0.9 1.1 --hflip 0 "
           f"--epochs {args.epochs} --batch-size {args.batch_size} --opt adamw --lr {args.lr} --weight-decay 0.05 "
           f"--warmup 1 --sched cosine --label-smoothing 0.1 --workers {args.workers} --threads {args.threads} "
           f"--seed 0 --output {args.output}")
    print(cmd, flush=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    rows = read_csv(Path(args.output) / "metrics.csv")
    record = {
        "model": args.model, "pretrained": args.pretrained, "img_size": args.img_size, "epochs": args.epochs,
        "command": cmd, "final_top1": result["val_top1"], "final_top5": result["val_top5"],
        "best_top1": max(r["val_top1"] for r in rows), "wall_s": round(wall, 1),
        "rows": [{k: r[k] for k in ("epoch", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "epoch_time_s")}
                 for r in rows],
        "n_train": n_train, "n_val": n_val, "threads": args.threads, "workers": args.workers,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
                   f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end), torch {torch.__version__}, "
                   f"Python {platform.python_version()}",
    }
    res_dir = Path(args.results_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    name = f"{args.model}{'-pretrained' if args.pretrained else ''}-{args.img_size}px.json"
    (res_dir / name).write_text(json.dumps(record, indent=1) + "\n")
    shutil.copyfile(Path(args.output) / "metrics.svg", res_dir / name.replace(".json", ".svg"))
    text = render(res_dir)
    Path(args.results).write_text(text)
    print(text)
    return 0 if result["val_top1"] >= 95.0 else 1


def render(res_dir: Path) -> str:
    """The markdown report over every recorded run in ``res_dir``."""
    records = [json.loads(p.read_text()) for p in sorted(res_dir.glob("*.json"))]
    lines = [
        "# Digits fine-tuning (in_chans=1, CPU)",
        "",
        "Real data no one here made: scikit-learn's bundled `load_digits` (1797 8×8 grayscale handwritten digits),",
        "written as an image folder by `visionzoo.data.dataset.write_digits_folder` (stratified 80/20 split, seed 0),",
        "upscaled by the package's own transforms and trained through `visionzoo.train` (the `visionzoo train` path:",
        "DataLoader workers, checkpoints every epoch, metrics CSV + plot). Regenerate with",
        "`python benchmarks/digits_finetune.py [--model M] [--pretrained]`; each run is kept as JSON in",
        "`benchmarks/results/digits_finetune/`.",
        "",
        "| model | weights | input | epochs | final val top-1 | final val top-5 | best val top-1 | first epoch ≥ 95% "
        "| wall time | mean epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        mean_epoch = sum(x["epoch_time_s"] for x in r["rows"]) / len(r["rows"])
        first95 = next((int(x["epoch"]) for x in r["rows"] if x["val_top1"] >= 95.0), "—")
        weights = "pretrained (ImageNet), first conv summed to 1 channel" if r["pretrained"] else "random init"
        lines.append(f"| {r['model']} | {weights} | 1×{r['img_size']}×{r['img_size']} | {r['epochs']} "
                     f"| {r['final_top1']:.2f}% | {r['final_top5']:.2f}% "
                     f"| {r['best_top1']:.2f}% | {first95} | {r['wall_s']:.0f} s | {mean_epoch:.1f} s |")
    for r in records:
        lines += ["", f"## {r['model']}{' (pretrained)' if r['pretrained'] else ''}, {r['img_size']} px", "",
                  "```", r["command"], "```", "",
                  f"![curves]({r['model']}{'-pretrained' if r['pretrained'] else ''}-{r['img_size']}px.svg)"
                  .replace("](", "](digits_finetune/"), "",
                  f"{r['n_train']} train / {r['n_val']} val images; {r['threads']} torch thread(s), {r['workers']} "
                  f"DataLoader worker(s); {r['machine']}. Wall time includes data loading, validation, checkpoint "
                  "writing and plotting every epoch, and is inflated by the shared machine's load.", "",
                  "| epoch | lr | train loss | val loss | val top-1 | val top-5 | time (s) |",
                  "|---|---|---|---|---|---|---|"]
        for x in r["rows"]:
            lines.append(f"| {int(x['epoch'])} | {x['lr']:.2e} | {x['train_loss']:.4f} | {x['val_loss']:.4f} | "
                         f"{x['val_top1']:.2f} | {x['val_top5']:.2f} | {x['epoch_time_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
