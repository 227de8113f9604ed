"""``visionzoo train``: fine-tune a backbone on an image folder (single process or under torchrun)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from .completion import model_completer, set_completer
from .errors import Interrupted

__all__ = ["add_train_arguments", "run_train", "config_from_args"]

# Choices of the training modules, repeated here so that building the parser does not import torch
# (tests/test_cli_unix.py checks they equal visionzoo.train's and visionzoo.data's).
HEADS = ("linear", "mlp")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "nadam", "radam", "rmsprop", "lamb", "adagrad")
SCHEDULES = ("onecycle", "cosine", "step", "const")
INTERPOLATIONS = ("bicubic", "bilinear", "box", "hamming", "lanczos", "nearest")


def _amp_choice(value: str) -> str:
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "off": "none", "fp32": "none"}
    value = aliases.get(value, value)
    if value not in ("none", "bfloat16", "float16"):
        raise argparse.ArgumentTypeError(f"--amp must be bfloat16, float16 or none, not {value!r}")
    return value


def _lr_choice(value: str) -> float | str:
    if value.strip().lower() == "auto":
        return "auto"
    try:
        lr = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lr must be a number or 'auto', not {value!r}") from None
    if not lr > 0:
        raise argparse.ArgumentTypeError(f"--lr must be positive, not {value!r}")
    return lr


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``visionzoo train`` (names match :class:`visionzoo.train.TrainConfig` fields)."""
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    g = p.add_argument_group("model")
    set_completer(g.add_argument("--model", "-m", required=True,
                                 help="architecture name, e.g. resnet18 or resnet50.a1_in1k"), model_completer())
    g.add_argument("--pretrained", action="store_true", help="start from the model's pretrained weights")
    g.add_argument("--initial-checkpoint", default=None, metavar="PATH", help="start from these weights")
    g.add_argument("--num-classes", type=int, default=None,
                   help="classes of the new head (default: number of class folders; must match them)")
    g.add_argument("--in-chans", type=int, default=None, help="input channels (default: 1 when the training "
                   "images are grayscale, else 3; pretrained first-conv weights are adapted)")
    g.add_argument("--head", choices=HEADS, default="linear",
                   help="linear: new classifier; mlp: Linear→ReLU→Dropout→Linear on num_features")
    g.add_argument("--head-hidden", type=int, default=512, help="hidden width of the MLP head")
    g.add_argument("--head-dropout", type=float, default=0.2, help="dropout of the MLP head")
    g.add_argument("--drop", dest="drop_rate", type=float, default=None, help="dropout before the classifier")
    g.add_argument("--drop-path", dest="drop_path_rate", type=float, default=None, help="stochastic depth rate")
    g.add_argument("--freeze-backbone", action="store_true", help="train only the classifier (linear probe)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute activations to save memory")
    g.add_argument("--channels-last", action="store_true", help="use channels_last memory format")

    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, metavar="DIR",
                     help="image folder: DIR/<class>/* or DIR/train/<class>/* + DIR/val/<class>/*")
    src.add_argument("--dataset", default=None, metavar="NAME", help="built-in offline data set: digits")
    g.add_argument("--val-split", type=float, default=0.1, help="validation fraction when DIR has no val/ folder")
    g.add_argument("--img-size", type=int, default=None, help="input size (default: the images' median short "
                   "side rounded to a multiple of 32, at least 32, at most the model's size)")
    g.add_argument("--crop-pct", type=float, default=None,
                   help="eval center-crop fraction (default: 1.0 when the input size follows small images, "
                        "else the model's)")
    g.add_argument("--interpolation", choices=INTERPOLATIONS, default=None, help="resize filter (default: the model's)")
    g.add_argument("--mean", type=float, nargs="+", default=None,
                   help="normalisation mean per channel (default: the model's)")
    g.add_argument("--std", type=float, nargs="+", default=None,
                   help="normalisation std per channel (default: the model's)")
    g.add_argument("--scale", type=float, nargs=2, default=None, help="random-resized-crop area range (default: "
                   "from image size and set size, (0.7, 1) for small images and sets up to (0.08, 1))")
    g.add_argument("--ratio", type=float, nargs=2, default=None,
                   help="random-resized-crop aspect range (default: (0.91, 1.1) up to (3/4, 4/3), as --scale)")
    g.add_argument("--hflip", type=float, default=None,
                   help="horizontal flip probability (default: 0.5 for large images or sets, else 0)")
    g.add_argument("--color-jitter", type=float, default=0.0, help="brightness/contrast/saturation strength")
    g.add_argument("--workers", "-j", type=int, default=2, help="DataLoader worker processes per process")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=10, help="total epochs (a resumed run counts the finished ones)")
    g.add_argument("--batch-size", "-b", type=int, default=32, help="batch size per process")
    g.add_argument("--opt", choices=OPTIMIZERS, default="adamw", help="optimizer")
    g.add_argument("--lr", type=_lr_choice, default="auto",
                   help="peak learning rate; 'auto': an LR range test before training picks it (plot in OUTPUT)")
    g.add_argument("--lr-finder-steps", type=int, default=60, help="steps of the LR range test of --lr auto")
    g.add_argument("--weight-decay", "--wd", type=float, default=0.05,
                   help="weight decay (never applied to norms, biases, position embeddings)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (momentum / nesterov)")
    g.add_argument("--layer-decay", type=float, default=None,
                   help="layer-wise LR decay: block i of L trains at lr*decay**(L-1-i) (default with --pretrained: "
                        "the first layer at 0.3 of lr; 1 = off)")
    g.add_argument("--head-warmup", type=float, default=None,
                   help="epochs of head-only training (backbone frozen) before the whole net (default with "
                        "--pretrained: 1 epoch, at most 100 steps; 0 = off)")
    g.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm")
    g.add_argument("--sched", choices=SCHEDULES, default="onecycle",
                   help="learning-rate schedule (onecycle: cosine rise over the warmup, cosine fall)")
    g.add_argument("--warmup", type=float, default=None,
                   help="warmup epochs (fractions allowed; default: 25%% of the run for onecycle, else 0)")
    g.add_argument("--warmup-lr-factor", type=float, default=0.01, help="warmup starts at lr*factor")
    g.add_argument("--min-lr", type=float, default=0.0, help="cosine schedule: final learning rate")
    g.add_argument("--decay-epochs", type=float, default=30.0, help="step schedule: epochs between decays")
    g.add_argument("--decay-rate", type=float, default=0.1, help="step schedule: LR factor per decay")
    g.add_argument("--label-smoothing", "--smoothing", type=float, default=0.1, help="label smoothing of the loss")
    g.add_argument("--mixup", type=float, nargs="?", const=0.8, default=0.0, help="mixup alpha (0 = off)")
    g.add_argument("--cutmix", type=float, nargs="?", const=1.0, default=0.0, help="cutmix alpha (0 = off)")
    g.add_argument("--mixup-prob", type=float, default=1.0, help="probability a batch is mixed")
    g.add_argument("--mixup-switch-prob", type=float, default=0.5, help="cutmix probability when both are on")
    g.add_argument("--amp", type=_amp_choice, nargs="?", const="bfloat16", default="none",
                   help="autocast dtype: bfloat16 (CPU or GPU), float16 (GPU, with loss scaling) or none")
    g.add_argument("--ema", action="store_true", help="keep and evaluate an EMA of the weights")
    g.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay per step")

    g = p.add_argument_group("run")
    g.add_argument("--output", "-o", default=None, metavar="DIR",
                   help="run directory (default: runs/<model>-<time>, or the resume checkpoint's folder)")
    g.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue from a training checkpoint; 'auto' = OUTPUT/last.pth when it exists")
    g.add_argument("--keep-checkpoints", type=int, default=0, help="also keep the newest N checkpoint-<epoch>.pth")
    g.add_argument("--seed", type=int, default=42, help="seed of weights init, data order and augmentation")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: torch's)")
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress bars")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    g.add_argument("--json", action="store_true",
                   help="stdout holds only the final JSON object; the progress log goes to stderr")


def config_from_args(args: argparse.Namespace) -> "TrainConfig":  # noqa: F821
    from ..train.engine import TrainConfig

    fields = {f for f in TrainConfig.__dataclass_fields__ if f != "extra"}
    kwargs = {k: v for k, v in vars(args).items() if k in fields}
    if kwargs.get("resume") == "auto":
        if not kwargs.get("output"):
            raise ValueError("--resume auto needs --output DIR")
        last = Path(kwargs["output"]) / "last.pth"
        kwargs["resume"] = str(last) if last.is_file() else None
    return TrainConfig(**kwargs)


def run_train(args: argparse.Namespace) -> int:
    from ..train.engine import train

    cfg = config_from_args(args)
    log_to = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with log_to:
            result = train(cfg)
    except KeyboardInterrupt as e:  # every finished epoch is already in OUTPUT/last.pth
        where = f"{cfg.output}/last.pth" if cfg.output else "last.pth of the run directory logged at the start"
        raise Interrupted(f"finished epochs are saved in {where}; continue with --resume") from e
    if os.environ.get("RANK", "0") == "0" and result is not None:
        keys = ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "best_top1", "output")
        print(json.dumps({k: result[k] for k in keys if k in result}))
    return 0
