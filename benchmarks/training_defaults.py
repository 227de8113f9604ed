"""Issue 20's check: ``visionzoo train --model M --data DIR --epochs 3`` with no other flag.

Runs the command line exactly as a user types it (a subprocess in a scratch folder, so the run
directory is the default ``runs/<model>-<time>``), times it, and records the final metrics, the
resolved ``recipe.json`` and the per-epoch rows as JSON in ``benchmarks/results/training_defaults/``;
``benchmarks/results/training_defaults.md`` is rendered from every record there.

    python tools/digits_folder.py /tmp/digits32
    python benchmarks/training_defaults.py --data /tmp/digits32 --label digits32-seed0
    python benchmarks/training_defaults.py --data /tmp/digits32 --model tf_efficientnet_lite0.pypi_in1k \\
        --pretrained --label digits32-seed0
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

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "training_defaults"


def run(model: str, data: str, epochs: int, pretrained: bool, label: str, note: str) -> dict:
    cmd = ["visionzoo", "train", "--model", model, *(["--pretrained"] if pretrained else []), "--data", data,
           "--epochs", str(epochs)]
    work = Path(tempfile.mkdtemp(prefix="vz-defaults-"))
    print("$ " + " ".join(cmd), flush=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    print(proc.stdout, flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"training failed with exit code {proc.returncode}")
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    out = Path(final["output"])
    out = out if out.is_absolute() else work / out
    recipe = json.loads((out / "recipe.json").read_text())
    import csv

    with open(out / "metrics.csv", encoding="utf-8") as f:
        rows = [{k: float(v) if v not in ("", None) else None for k, v in r.items()} for r in csv.DictReader(f)]
    inferred = next((line for line in proc.stdout.splitlines() if line.startswith("inferred:")), "")
    return {
        "label": label, "model": model, "pretrained": pretrained, "data": data, "note": note,
        "command": " ".join(cmd), "final_top1": final["val_top1"], "final_top5": final.get("val_top5"),
        "wall_s": round(wall, 1), "rows": rows, "inferred": inferred,
        "recipe": {k: recipe.get(k) for k in ("lr", "lr_source", "img_size", "in_chans", "num_classes",
                                              "augmentation", "layer_decay", "warmup_steps", "head_warmup_steps",
                                              "steps_per_epoch", "train_images", "val_images")},
        "lr_finder_s": (recipe.get("lr_finder") or {}).get("time_s"),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS",) if k in os.environ},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load average "
                   f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end), Python {platform.python_version()}",
    }


NOTES = """## Notes

* **Both done-when runs pass with no flag**: resnet18 from scratch 99.49 % (≥ 95 %), lite0 pretrained
  98.48 % (≥ 97 %) after 3 epochs on the issue's 32-px digits folder (1401 train / 396 val here).
* **Other splits and sets** (defaults not tuned to one split): lite0 pretrained 97.98 % (seed 1), 98.48 %
  (seed 2) and 98.33 % on the original 8-px images with an 80/20 split; resnet18 97.98 % (seed 1) and 98.61 %
  (8-px images, size inferred as 32). A small set (30 training images per class, 9 steps per epoch) is not
  enough for 3 epochs from scratch (66.9 %: 27 optimizer steps in all); with `--epochs 10` (90 steps) the same
  set reaches 98.99 %. No other real image set is available offline here (scikit-learn's other image sets are
  downloads), so digits at other splits, resolutions and sizes stand in for it.
* **The pretrained defaults were changed (session 2026-12-03) after lite0 missed 97 % on the seed-1 split**
  (95.96 % with a 64-px floor and the stem at 1/10 of the head's lr). Runs with explicit flags, 3 epochs:

  | pretrained input floor | stem lr share | seed 0 | seed 1 | seed 2 |
  |---|---|---|---|---|
  | 64 px (a quarter of 224) | 0.1 | 97.22 | 95.96 | |
  | 64 px | 1.0 (no layer decay) | | 97.47 | |
  | 64 px | 0.3 | 96.97 | 96.21 | 97.47 |
  | 96 px (0.4 of 224) | 0.1 | | 97.22 | |
  | **96 px** | **0.3** | 98.48 | 97.98 | 98.74 |

  The last row is the new default (`infer_img_size`: at least 0.4 of the pretrained size; `auto_layer_decay`:
  the stem at 0.3 of the head's lr); the table above re-runs it with no flag (98.48 / 97.98 / 98.48 % and
  98.33 % on the 8-px set). 96 px costs about 2.25x the compute of 64 px per epoch. resnet18 from scratch is
  unaffected (neither rule applies without `--pretrained`).
* **How the first defaults were settled** (same folder, seed 0): the issue's run (hand flags, cosine,
  lr 1e-3, ImageNet crop) gave 59.9 %. With the range test (min/10 rule), onecycle and the gentle crop
  resnet18 reached 99.5 %. lite0 pretrained at 32 px (input size from the data alone) reached 91.4 % (auto
  layer decay), 94.9 % (no layer decay) and 95.2 % (lr 6e-3): the frozen head warm-up only got its loss from
  2.29 to 2.05 at 32 px but to 1.09 at 64 px, hence a pretrained floor; 98.0 % with eval crop 0.875, 94.9 %
  with crop 1.0 and the very same training, hence the eval crop from the training crops' mean area.
* Wall times: the resnet18 rows ran on 2 CPU cores shared with ~8 other jobs (load average 15–22); the lite0
  rows two at a time on an otherwise idle 2-core VM (one torch thread each, `OMP_NUM_THREADS=1`). The LR range
  test costs about 60 steps; the issue's ~6 s/epoch for resnet18 was on an idle box.
"""


def render(md: Path) -> None:
    recs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    lines = [
        "# Training defaults (issue 20): `visionzoo train --model M --data DIR --epochs N`, no other flag",
        "",
        "Rendered by `benchmarks/training_defaults.py` from `benchmarks/results/training_defaults/*.json`. Every run is",
        "the command line shown, in an empty folder (default run directory), on CPU. Data folders are written by",
        "`tools/digits_folder.py` from scikit-learn's bundled `load_digits` (real handwritten digits, 8×8 px",
        "originals; 1797 images). Wall time covers everything the command does: image check, LR range test, head",
        "warm-up (pretrained), the epochs with validation, checkpoints, plots; the machine's load at start and end",
        "is given per run (2 cores; a load above 2 inflates the times).",
        "",
        "| model | data | epochs | final val top-1 | val top-1 per epoch | wall time | lr found | inferred size / chans | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        per = " / ".join(f"{row['val_top1']:.1f}" for row in r["rows"])
        rc = r["recipe"]
        lines.append(f"| {r['model']}{' (pretrained)' if r['pretrained'] else ''} | {r['label']} "
                     f"({rc['train_images']} train / {rc['val_images']} val) | {len(r['rows'])} | "
                     f"**{r['final_top1']:.2f} %** | {per} | "
                     f"{r['wall_s']:.0f} s | {rc['lr']:.2e} | {rc['img_size']} px / {rc['in_chans']} | {r['note']} |")
    lines += ["", "## Runs", ""]
    for r in recs:
        lines += [f"### {r['model']}{' (pretrained)' if r['pretrained'] else ''}, {r['label']}", "",
                  "```", r["command"], "```", "", r["inferred"], "",
                  f"LR range test {r['lr_finder_s']} s; {r['machine']}; environment {r['env'] or 'default'}.", "",
                  "| epoch | lr | train loss | train top-1 | val loss | val top-1 | time (s) |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| {int(row['epoch'])} | {row['lr']:.2e} | {row['train_loss']:.4f} | {row['train_top1']:.2f} | "
                         f"{row['val_loss']:.4f} | {row['val_top1']:.2f} | {row['epoch_time_s']:.1f} |")
        lines.append("")
    md.write_text("\n".join(lines) + "\n" + NOTES)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--data", required=False)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--label", default="digits32-seed0", help="name of the data set / split in the table")
    p.add_argument("--note", default="")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--results", default=str(HERE / "results" / "training_defaults.md"))
    a = p.parse_args(argv)
    if not a.render_only:
        rec = run(a.model, a.data, a.epochs, a.pretrained, a.label, a.note)
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = f"{a.model.replace('/', '_')}{'-pretrained' if a.pretrained else ''}-{a.label}.json"
        (RESULTS / name).write_text(json.dumps(rec, indent=1))
    render(Path(a.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
