"""``visionzoo validate``: loss / top-1 / top-5 of a model or training checkpoint on an image folder."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .completion import model_completer, set_completer
from .train import HEADS

__all__ = ["add_validate_arguments", "run_validate", "validate"]


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    set_completer(p.add_argument("--model", "-m", default=None,
                                 help="architecture (optional with a training checkpoint, which records it), or "
                                      "local-dir:PATH / hf-hub:ORG/NAME (a shared model: its weights and class names)"),
                  model_completer())
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="a visionzoo training checkpoint (last.pth, model_best.pth) or a weights file")
    p.add_argument("--pretrained", action="store_true", help="use the model's pretrained weights")
    p.add_argument("--use-ema", action="store_true", help="evaluate the checkpoint's EMA weights")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, metavar="DIR",
                     help="DIR/<class>/* ; when DIR has a val/ (or --split) folder, that is used")
    src.add_argument("--dataset", default=None, metavar="NAME", help="built-in data set (digits): its val split")
    p.add_argument("--split", default=None, help="sub-folder of DIR to evaluate (default: val if present)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the checkpoint's, else the number of class folders)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels (default: checkpoint's or 3)")
    p.add_argument("--head", choices=HEADS, default=None, help="head type, when not from a checkpoint")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: checkpoint's or the model's)")
    p.add_argument("--crop-pct", type=float, default=None, help="center-crop fraction (default: the model's)")
    p.add_argument("--batch-size", "-b", type=int, default=64, help="images per forward pass")
    p.add_argument("--workers", "-j", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--amp", default="none", choices=("none", "bfloat16", "float16"), help="autocast dtype")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--results-file", default=None, metavar="PATH", help="also write the result as JSON")
    p.add_argument("--json", action="store_true",
                   help="stdout holds only the JSON result (it is printed as JSON either way; progress goes to stderr)")


def _eval_dir(args: argparse.Namespace) -> Path:
    from ..data.dataset import DatasetError, builtin_dataset_dir

    if args.dataset:
        return builtin_dataset_dir(args.dataset) / "val"
    if not args.data:
        raise ValueError("pass --data DIR (one sub-directory per class) or --dataset NAME")
    root = Path(args.data)
    if not root.is_dir():
        raise DatasetError(f"data directory not found: {root}")
    if args.split:
        if not (root / args.split).is_dir():
            raise DatasetError(f"{root} has no {args.split!r} folder")
        return root / args.split
    for name in ("val", "validation", "test"):
        if (root / name).is_dir():
            return root / name
    return root


def _shared_model(model_name: str, args: argparse.Namespace) -> tuple[Any, list[str] | None]:
    """A ``local-dir:`` / ``hf-hub:`` model with its weights (unless ``--checkpoint``) and class names."""
    from ..factory import create_model

    model = create_model(model_name, pretrained=not args.checkpoint, num_classes=args.num_classes,
                         in_chans=args.in_chans)
    names = getattr(getattr(model, "pretrained_cfg", None), "label_names", None)
    return model, list(names) if names else None


def validate(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model (from a training checkpoint's record, or a shared ``local-dir:`` / ``hf-hub:``
    model with its class names) and evaluate it."""
    import torch

    from ..data.config import resolve_data_config
    from ..data.dataset import DatasetError, ImageFolder
    from ..data.transforms import create_transform
    from ..pretrained.load import clean_state_dict, load_state_dict_file
    from ..train.distributed import cleanup_distributed, init_distributed
    from ..train.engine import ShardSampler, create_loader, evaluate
    from ..train.model import MlpHeadClassifier, build_train_model

    info = init_distributed(args.device)
    try:
        ckpt: dict[str, Any] = {}
        if args.checkpoint:
            raw = load_state_dict_file(args.checkpoint)
            ckpt = raw if isinstance(raw, dict) else {}
        minfo = dict(ckpt.get("model_info") or {})
        model_name = args.model or minfo.get("model")
        if not model_name:
            raise ValueError("--model is required unless --checkpoint is a visionzoo training checkpoint")
        eval_dir = _eval_dir(args)
        shared, folder_classes = None, None
        if model_name.startswith(("local-dir:", "hf-hub:", "hf_hub:")):
            shared, folder_classes = _shared_model(model_name, args)
        saved_classes = ckpt.get("class_names") or folder_classes
        ds = ImageFolder(eval_dir, classes=None)
        if saved_classes:
            unknown = [c for c in ds.classes if c not in saved_classes]
            if unknown:
                raise DatasetError(f"{eval_dir} has classes the checkpoint was not trained on: "
                                   f"{', '.join(unknown[:10])}")
            idx = {c: i for i, c in enumerate(saved_classes)}
            samples = [(p, idx[ds.classes[t]]) for p, t in ds.samples]
            ds = ImageFolder(eval_dir, classes=list(saved_classes), samples=samples)
        num_classes = args.num_classes or minfo.get("num_classes") or len(ds.classes)
        if shared is not None:
            num_classes = shared.num_classes
        if num_classes < len(ds.classes):
            raise DatasetError(f"the model has {num_classes} outputs but {eval_dir} has {len(ds.classes)} "
                               "class folders")
        in_chans = args.in_chans or minfo.get("in_chans")
        head = args.head or minfo.get("head", "linear")
        model = shared if shared is not None else build_train_model(
            model_name, num_classes, in_chans, pretrained=args.pretrained, head=head,
            head_hidden=minfo.get("head_hidden", 512), head_dropout=minfo.get("head_dropout", 0.2))
        if args.checkpoint:
            sd = clean_state_dict(ckpt if ckpt else raw, use_ema=args.use_ema)
            if args.use_ema and "state_dict_ema" in ckpt and ckpt["state_dict_ema"] is None:
                raise ValueError(f"{args.checkpoint} holds no EMA weights (trained without --ema)")
            try:
                model.load_state_dict(sd)
            except RuntimeError as e:
                raise ValueError(f"{args.checkpoint} does not fit {model_name} with {num_classes} classes: "
                                 f"{str(e).splitlines()[0]}") from e
        saved_dc = ckpt.get("data_config") or {}
        dc_args = {"img_size": args.img_size, "crop_pct": args.crop_pct, "in_chans": in_chans}
        if saved_dc and args.img_size is None:
            dc_args["input_size"] = saved_dc.get("input_size")
            for k in ("crop_pct", "mean", "std", "interpolation", "crop_mode"):
                if dc_args.get(k) is None:
                    dc_args[k] = saved_dc.get(k)
        data_cfg = resolve_data_config(dc_args, model=model.backbone if isinstance(model, MlpHeadClassifier) else model)
        ds.transform = create_transform(**data_cfg, is_training=False)
        model.to(info.device)
        loader = create_loader(ds, args.batch_size, ShardSampler(len(ds), info.rank, info.world_size), args.workers,
                               pin_memory=info.device.type == "cuda")
        with torch.inference_mode():
            m = evaluate(model, loader, info.device, args.amp, progress=None if info.primary else False)
        return {"model": model_name, "checkpoint": args.checkpoint, "data": str(eval_dir), "images": m["count"],
                "top1": round(m["top1"], 4), "top5": round(m["top5"], 4), "loss": round(m["loss"], 6),
                "input_size": list(data_cfg["input_size"])}
    finally:
        cleanup_distributed()


def run_validate(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        result = validate(args)
    if os.environ.get("RANK", "0") == "0":
        text = json.dumps(result)
        print(text)
        if args.results_file:
            Path(args.results_file).write_text(text + "\n")
    return 0
