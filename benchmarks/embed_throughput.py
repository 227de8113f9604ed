"""Throughput of ``visionzoo embed`` (images/s): 1 and 2 processes, with and without ``--optimize``.

Builds a folder of JPEGs from the example photos (random crops and sizes, so every file decodes
and resizes like a real photo), then runs the command line as a user would: one process with all
cores, and ``torchrun --nproc_per_node 2`` (one thread each). ``images_per_s`` is the command's own
report: images / seconds from the synchronised start after model load to all ranks done.

    python benchmarks/embed_throughput.py [--images 96] [--batch-size 32] [--repeat 2] [--model NAME] [--out FILE.md]

With ``--repeat R`` the four configurations run R times, interleaved (the order reversed every other
round, so a change in machine load hits every configuration alike); the table gives the median and
the range.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    import random

    from PIL import Image

    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.glob("*.jpg"))]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        side = rng.choice([320, 480, 640])
        crop = img.crop((x, y, x + cw, y + ch))
        crop.resize((side, side * ch // cw), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)


def run(images: Path, out: Path, model: str, nproc: int, optimize: str, batch: int, workers: int) -> dict:
    embed = ["embed", str(images), "--out", str(out), "--model", model, "--batch-size", str(batch),
             "--shard-size", str(batch), "--workers", str(workers), "--no-progress", "--json", "--overwrite"]
    if optimize != "none":
        embed += ["--optimize", optimize]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "visionzoo", *embed]
        env.pop("OMP_NUM_THREADS", None)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "visionzoo", *embed]
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // nproc))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    rep = json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])
    rep["wall_s"] = round(wall, 1)
    return rep


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--model", default="tf_efficientnet_lite0.pypi_in1k")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["none", "fp32"], choices=("none", "fp32", "onnxruntime", "int8"),
                    help="--optimize modes to time (none = eager)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embed_throughput.md"))
    args = ap.parse_args()
    import torch

    import statistics

    configs = [(nproc, optimize) for nproc in args.procs for optimize in args.modes]
    runs: dict[tuple[int, str], list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        make_images(images, args.images)
        load_before = load()
        for r in range(args.repeat):
            for nproc, optimize in (configs if r % 2 == 0 else configs[::-1]):
                rep = run(images, Path(tmp) / "emb.parquet", args.model, nproc, optimize, args.batch_size, args.workers)
                runs[(nproc, optimize)].append(rep)
                print(f"{nproc} proc, optimize={optimize}: {rep['images_per_s']} images/s "
                      f"(embed {rep['embed_s']} s, command {rep['wall_s']} s), load {load()}", flush=True)
        load_after = load()
    cpu = platform.processor() or platform.machine()
    lines = [
        "# `visionzoo embed` throughput", "",
        f"`python benchmarks/embed_throughput.py --images {args.images} --batch-size {args.batch_size} "
        f"--workers {args.workers} --repeat {args.repeat}`: {args.model}, {args.images} JPEGs (320-640 px wide crops of the example "
        f"photos), batch {args.batch_size}, shard {args.batch_size}, {args.workers} DataLoader worker(s) per process, "
        "Parquet output. One process uses every core's thread; `torchrun --nproc_per_node 2` gives each rank "
        f"{max(1, (os.cpu_count() or 2) // 2)} thread(s).", "",
        f"Machine: {os.cpu_count()} logical cores ({cpu}), torch {torch.__version__}, Python "
        f"{platform.python_version()}. Load average (1/5/15 min) before: {load_before}, after: {load_after}.", "",
        "| processes | `--optimize` | images/s (median) | images/s (range) | embed s (median) "
        "| command s (median; incl. start-up, model load, merge) |",
        "|---|---|---|---|---|---|",
    ]
    for (nproc, optimize), reps in runs.items():
        ips = [r["images_per_s"] for r in reps]
        lines.append(f"| {nproc} | {'no' if optimize == 'none' else optimize} | {statistics.median(ips):.2f} | "
                     f"{min(ips):.2f} - {max(ips):.2f} | {statistics.median(r['embed_s'] for r in reps):.1f} | "
                     f"{statistics.median(r['wall_s'] for r in reps):.1f} |")
    lines += ["", f"{args.repeat} run(s) per configuration."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
