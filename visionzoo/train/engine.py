"""The training loop: data, model, optimizer, schedule, AMP, EMA, mixup, DDP, checkpoints and metrics.

:func:`train` runs a whole fine-tuning job from a :class:`TrainConfig`; the ``visionzoo train`` command
is a thin wrapper. Reproducibility: every epoch reseeds Python/NumPy/torch and the data order from
``(seed, epoch, rank)``, so a run resumed from the checkpoint of epoch *e* replays epochs *e+1..*
exactly as the uninterrupted run does.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ..data.dataset import (DatasetError, ImageFolder, builtin_dataset_dir, check_images, find_classes,
                            find_split_dirs, split_samples)
from .checkpoint import FORMAT, ResumeError, get_rng_state, load_training_checkpoint, save_checkpoint, set_rng_state
from .defaults import (FIRST_LAYER_LR_FACTOR, PRETRAINED_MIN_FRACTION, ImageStats, augment_strength, augmentation,
                       auto_layer_decay, eval_crop_pct, head_warmup_steps, infer_img_size, inspect_images)
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup_distributed, init_distributed
from .ema import ModelEma
from .metrics import AverageMeter, plot_metrics, topk_correct, write_csv
from .lr_finder import LRFinderResult, lr_range_test, plot_lr_finder
from .mixup import Mixup, SoftTargetCrossEntropy
from .model import MlpHeadClassifier, build_train_model, freeze_backbone, model_info, set_frozen_norms_eval
from .optim import create_optimizer, param_layer_ids
from .scheduler import Scheduler

__all__ = ["TrainConfig", "train", "evaluate", "build_datasets", "create_loader", "ShardSampler", "AMP_DTYPES",
           "write_recipe"]

AMP_DTYPES = {"none": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    """Everything a run needs; field names equal the ``visionzoo train`` options (dashes -> underscores)."""

    model: str
    data: str | None = None
    dataset: str | None = None
    num_classes: int | None = None
    pretrained: bool = False
    initial_checkpoint: str | None = None
    in_chans: int | None = None
    val_split: float = 0.1
    # input pipeline
    img_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    scale: Sequence[float] | None = None  # None: from the data (see visionzoo.train.defaults)
    ratio: Sequence[float] | None = None
    hflip: float | None = None
    color_jitter: float = 0.0
    workers: int = 2
    # head / regularisation
    head: str = "linear"
    head_hidden: int = 512
    head_dropout: float = 0.2
    drop_rate: float | None = None
    drop_path_rate: float | None = None
    freeze_backbone: bool = False
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    opt: str = "adamw"
    lr: float | str = "auto"  # "auto": LR range test before training
    lr_finder_steps: int = 60
    weight_decay: float = 0.05
    momentum: float = 0.9
    layer_decay: float | None = None  # None: auto_layer_decay for --pretrained, else off
    head_warmup: float | None = None  # epochs of frozen-backbone head training; None: auto with --pretrained
    clip_grad: float | None = None
    sched: str = "onecycle"
    warmup: float | None = None  # None: 25% of the steps for onecycle, else 0
    warmup_lr_factor: float = 0.01
    min_lr: float = 0.0
    decay_epochs: float = 30.0
    decay_rate: float = 0.1
    amp: str = "none"
    grad_checkpointing: bool = False
    channels_last: bool = False
    ema: bool = False
    ema_decay: float = 0.999
    # run
    output: str | None = None
    resume: str | None = None
    keep_checkpoints: int = 0
    seed: int = 42
    device: str | None = None
    threads: int | None = None
    progress: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, checkpoint-safe values (tuples -> lists)."""
        out = {}
        for k, v in dataclasses.asdict(self).items():
            out[k] = list(v) if isinstance(v, tuple) else v
        return out


# ----------------------------------------------------------------------------------------------
# data

class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every sample evaluated exactly once over all processes."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


class EpochSeeded(Dataset):
    """Seeds Python's ``random`` from ``(epoch seed, index)`` before each item's transform, so the
    augmentation of every image is the same whatever the number of workers or processes."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.seed = dataset, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        random.seed(self.seed * (1 << 32) + index)
        return self.dataset[index]


def _data_root(cfg: TrainConfig) -> Path:
    if cfg.data and cfg.dataset:
        raise ValueError("give either --data DIR or --dataset NAME, not both")
    if cfg.dataset:
        return builtin_dataset_dir(cfg.dataset)
    if not cfg.data:
        raise ValueError("no training data: pass --data DIR (one sub-directory per class) or --dataset digits")
    return Path(cfg.data)


def build_datasets(cfg: TrainConfig, train_transform: Any, eval_transform: Any,
                   seed: int = 0) -> tuple[ImageFolder, ImageFolder | None]:
    """Train and validation :class:`ImageFolder` s from ``cfg.data`` / ``cfg.dataset``.

    ``DIR/train`` + ``DIR/val`` are used when present; otherwise ``DIR`` is split by ``val_split``
    (stratified, seeded). Validation classes must be a subset of the training classes and share
    their indices.
    """
    root = _data_root(cfg)
    train_dir, val_dir = find_split_dirs(root)
    full = ImageFolder(train_dir, train_transform)
    if val_dir is None:
        if cfg.val_split <= 0:
            return full, None
        tr, va = split_samples(full.targets, cfg.val_split, seed)
        return full.subset(tr, train_transform), (full.subset(va, eval_transform) if va else None)
    val_classes = find_classes(val_dir)
    unknown = [c for c in val_classes if c not in full.class_to_idx]
    if unknown:
        raise DatasetError(f"validation folder {val_dir} has classes not in {train_dir}: {', '.join(unknown[:10])}")
    val = ImageFolder(val_dir, eval_transform, classes=val_classes)
    samples = [(p, full.class_to_idx[val_classes[t]]) for p, t in val.samples]
    return full, ImageFolder(val_dir, eval_transform, classes=full.classes, samples=samples)


def create_loader(dataset: Dataset, batch_size: int, sampler: Sampler[int], workers: int,
                  drop_last: bool = False, pin_memory: bool = False,
                  generator: torch.Generator | None = None) -> DataLoader:
    """A ``DataLoader`` with worker processes (not persistent: each epoch's workers are seeded anew).

    Under a process group the workers start from a ``forkserver``: forking the training process
    itself, whose communication threads (gloo, nccl) may hold a lock at that instant, can leave
    the child deadlocked before it runs a line (seen with torchrun on a loaded CPU).
    """
    context = None
    if workers > 0 and dist.is_available() and dist.is_initialized():
        import multiprocessing as mp

        context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=max(0, workers),
                      drop_last=drop_last, pin_memory=pin_memory, generator=generator,
                      prefetch_factor=2 if workers > 0 else None, multiprocessing_context=context)


# ----------------------------------------------------------------------------------------------
# helpers

def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2 ** 31)


def _seed_all(s: int) -> None:
    random.seed(s)
    np.random.seed(s % (2 ** 32))
    torch.manual_seed(s)


def _autocast(device: torch.device, amp: str) -> Any:
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _broadcast_buffers(module: nn.Module) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics drift per rank; weights are in sync)."""
    if dist.is_available() and dist.is_initialized():
        for t in module.buffers():
            dist.broadcast(t, src=0)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: str = "none",
             channels_last: bool = False, progress: bool | None = False, desc: str = "val") -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy (%) over ``loader``, summed across processes when distributed."""
    model.eval()
    loss_sum, c1, c5, n = 0.0, 0, 0, 0
    it = loader
    if progress is not False:
        from tqdm import tqdm
        it = tqdm(loader, desc=desc, leave=False, disable=progress is None and not sys.stderr.isatty())
    for x, y in it:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        a, b = topk_correct(logits, y, (1, 5))
        c1, c5, n = c1 + a, c5 + b, n + y.shape[0]
    loss_sum, c1, c5, n = all_reduce_sum([loss_sum, c1, c5, n], device)
    if n == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "count": 0}
    return {"loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "count": int(n)}


def _log(info: DistInfo, msg: str) -> None:
    if info.primary:
        print(msg, flush=True)


def _check_resume_compat(ckpt: dict[str, Any], minfo: dict[str, Any], class_names: list[str], path: str) -> None:
    old = ckpt.get("model_info") or {}
    diffs = [f"{k}: checkpoint {old[k]!r} vs now {minfo[k]!r}" for k in ("model", "num_classes", "in_chans", "head")
             if k in old and old[k] != minfo[k]]
    if ckpt.get("class_names") and list(ckpt["class_names"]) != class_names:
        diffs.append("class folders differ from the checkpoint's classes")
    if diffs:
        raise ResumeError(f"cannot resume from {path}: the run differs from the checkpoint ({'; '.join(diffs)})")


# ----------------------------------------------------------------------------------------------
# the run

def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) a fine-tuning job; returns the final epoch's metrics row (with ``best_top1``).

    Writes to ``cfg.output``: ``last.pth`` every epoch, ``model_best.pth`` on a new best val top-1,
    ``checkpoint-<epoch>.pth`` (the newest ``keep_checkpoints``), ``metrics.csv``, ``metrics.svg``
    (``.png`` too with matplotlib) and ``args.json``. Under torchrun every process runs this;
    rank 0 alone writes files and logs.
    """
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, info)
    finally:
        cleanup_distributed()


@dataclass
class _Run:
    """Everything one training run holds between its steps (set up by :func:`_setup`)."""

    cfg: TrainConfig
    info: DistInfo
    out_dir: Path
    classes: list[str]
    model: nn.Module
    train_model: nn.Module
    data_cfg: dict[str, Any]
    minfo: dict[str, Any]
    train_set: Dataset
    val_set: Dataset | None
    train_sampler: DistributedSampler
    gen: torch.Generator
    seeded_train: EpochSeeded
    train_loader: DataLoader
    val_loader: DataLoader | None
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    mixup: Mixup | None
    criterion: nn.Module
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = float("-inf")
    recipe: dict[str, Any] = field(default_factory=dict)
    lr_finder: LRFinderResult | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)


def _train(cfg: TrainConfig, info: DistInfo) -> dict[str, Any]:
    run = _setup(cfg, info)
    _start_output(run)
    if run.start_epoch == 0 and run.recipe.get("head_warmup_steps", 0) > 0:
        _head_warmup(run)
    row: dict[str, Any] = run.history[-1] if run.history else {}
    for epoch in range(run.start_epoch, cfg.epochs):
        row, is_best = _run_epoch(run, epoch)
        if info.primary:
            _save_epoch(run, epoch, is_best)
        barrier()
    if not run.history:
        raise RuntimeError("nothing to do: no epochs were run")
    if run.start_epoch >= cfg.epochs:
        _log(info, f"checkpoint already holds all {cfg.epochs} epochs; nothing to train")
    if info.primary:  # the final weights as a local-dir: / hub-layout folder (docs/sharing.md)
        from ..pretrained.hub import save_training_run
        save_training_run(run.model, run.out_dir, label_names=run.classes, data_config=run.data_cfg,
                          options=run.cfg.to_dict(), metrics=row)
    return dict(row, best_top1=run.best, output=str(run.out_dir), recipe=run.recipe)


# --- setup

def _check_config(cfg: TrainConfig) -> None:
    if cfg.amp not in AMP_DTYPES:
        raise ValueError(f"unknown --amp {cfg.amp!r}; choose from {', '.join(AMP_DTYPES)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be ≥ 1")
    if isinstance(cfg.lr, str) and cfg.lr != "auto":
        raise ValueError(f"--lr must be a number or 'auto', not {cfg.lr!r}")


def _output_dir(cfg: TrainConfig, info: DistInfo) -> Path:
    if cfg.output:
        out_dir = Path(cfg.output)
    elif cfg.resume:
        out_dir = Path(cfg.resume).parent
    else:
        out_dir = Path("runs") / f"{cfg.model.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    if info.distributed and not cfg.output and not cfg.resume:
        raise ValueError("under torchrun pass --output DIR (the default name has a per-process timestamp)")
    return out_dir


def _find_train_classes(cfg: TrainConfig) -> list[str]:
    """The class folders of the training split (they size the head)."""
    train_dir, _ = find_split_dirs(_data_root(cfg))
    classes = find_classes(train_dir)
    if cfg.num_classes is not None and cfg.num_classes != len(classes):
        raise DatasetError(f"--num-classes {cfg.num_classes} but {train_dir} has {len(classes)} class folders "
                           f"({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''})")
    return classes


def _setup_model(cfg: TrainConfig, num_classes: int, device: torch.device, stats: ImageStats | None,
                 recipe: dict[str, Any], num_train: int = 0) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The model (seeded, frozen / checkpointed as asked, on ``device``), its data config and info.

    Channels, input size and eval crop left unset in ``cfg`` follow the data (``stats``); what was
    chosen and why goes into ``recipe`` (and its ``inferred`` list).
    """
    from ..data.config import resolve_data_config

    inferred: list[str] = recipe.setdefault("inferred", [])
    in_chans = cfg.in_chans
    if in_chans is None and stats is not None:
        in_chans = 1 if stats.grayscale else 3
        inferred.append(f"in_chans {in_chans} ({'grayscale' if stats.grayscale else 'colour'} images)")
    _seed_all(cfg.seed)
    model = build_train_model(cfg.model, num_classes, in_chans, cfg.pretrained, cfg.head, cfg.head_hidden,
                              cfg.head_dropout, cfg.drop_rate, cfg.drop_path_rate, cfg.initial_checkpoint)
    backbone = model.backbone if isinstance(model, MlpHeadClassifier) else model
    img_size, crop_pct = cfg.img_size, cfg.crop_pct
    if img_size is None and stats is not None:
        model_size = int(resolve_data_config({"in_chans": in_chans}, model=backbone)["input_size"][-1])
        img_size = infer_img_size(stats.median_short_side, model_size, cfg.pretrained)
        inferred.append(f"img_size {img_size} (median short side {stats.median_short_side:g} px of "
                        f"{stats.count} sampled images; model default {model_size}"
                        f"{f'; pretrained: at least {PRETRAINED_MIN_FRACTION:g} of it' if cfg.pretrained else ''})")
        if crop_pct is None and img_size < model_size:  # the model's crop_pct was meant for its own size
            scale = cfg.scale if cfg.scale is not None else augmentation(augment_strength(img_size, num_train))["scale"]
            crop_pct = eval_crop_pct(scale)
            inferred.append(f"crop_pct {crop_pct:g} (objects at the training crops' mean scale)")
    data_cfg = resolve_data_config({"img_size": img_size, "in_chans": in_chans, "crop_pct": crop_pct,
                                    "interpolation": cfg.interpolation, "mean": cfg.mean, "std": cfg.std},
                                   model=backbone)
    minfo = model_info(cfg.to_dict(), num_classes, data_cfg["input_size"][0])
    if cfg.freeze_backbone:
        freeze_backbone(model)
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ValueError(f"{cfg.model} does not support --grad-checkpointing")
        model.set_grad_checkpointing(True)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    recipe.update(in_chans=int(data_cfg["input_size"][0]), img_size=int(data_cfg["input_size"][-1]),
                  data_config={k: list(v) if isinstance(v, tuple) else v for k, v in data_cfg.items()})
    return model, data_cfg, minfo


def _resolve_augmentation(cfg: TrainConfig, img_size: int, num_train: int, recipe: dict[str, Any]) -> dict[str, Any]:
    """Crop scale / ratio and flip: the given ones, else :func:`augmentation` of the data's strength."""
    strength = augment_strength(img_size, num_train)
    auto = augmentation(strength)
    aug = {"scale": tuple(cfg.scale) if cfg.scale is not None else auto["scale"],
           "ratio": tuple(cfg.ratio) if cfg.ratio is not None else auto["ratio"],
           "hflip": float(cfg.hflip) if cfg.hflip is not None else auto["hflip"],
           "color_jitter": cfg.color_jitter}
    auto_keys = [k for k in ("scale", "ratio", "hflip") if getattr(cfg, k) is None]
    if auto_keys:
        recipe.setdefault("inferred", []).append(
            f"augmentation strength {strength:.2f} ({img_size} px, {num_train} train images): "
            + ", ".join(f"{k} {aug[k]}" for k in auto_keys))
    recipe["augmentation"] = {**{k: list(v) if isinstance(v, tuple) else v for k, v in aug.items()},
                              "strength": strength}
    return aug


def _setup_data(cfg: TrainConfig, info: DistInfo, data_cfg: dict[str, Any], train_set: ImageFolder,
                val_set: ImageFolder | None, recipe: dict[str, Any]) -> dict[str, Any]:
    """Transforms, samplers and loaders over the data sets (the :class:`_Run` fields of the same names)."""
    from ..data.transforms import create_transform

    aug = _resolve_augmentation(cfg, int(data_cfg["input_size"][-1]), len(train_set), recipe)
    train_set.transform = create_transform(**data_cfg, is_training=True, scale=aug["scale"], ratio=aug["ratio"],
                                           hflip=aug["hflip"], color_jitter=aug["color_jitter"])
    if val_set is not None:
        val_set.transform = create_transform(**data_cfg, is_training=False)
    per_rank = math.ceil(len(train_set) / info.world_size)
    drop_last = per_rank > cfg.batch_size
    train_sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                       seed=cfg.seed)
    gen = torch.Generator()
    pin = info.device.type == "cuda"
    seeded_train = EpochSeeded(train_set)
    train_loader = create_loader(seeded_train, cfg.batch_size, train_sampler, cfg.workers, drop_last, pin, gen)
    val_loader = None
    if val_set is not None:
        val_loader = create_loader(val_set, cfg.batch_size, ShardSampler(len(val_set), info.rank, info.world_size),
                                   cfg.workers, False, pin)
    if len(train_loader) == 0:
        raise DatasetError("the training set is empty")
    return dict(train_set=train_set, val_set=val_set, train_sampler=train_sampler, gen=gen, seeded_train=seeded_train,
                train_loader=train_loader, val_loader=val_loader)


def _resolve_layer_decay(cfg: TrainConfig, model: nn.Module, recipe: dict[str, Any]) -> float | None:
    """``--layer-decay``, else :func:`auto_layer_decay` when fine-tuning pretrained weights (1 = off)."""
    decay = cfg.layer_decay
    if decay is None and cfg.pretrained and not cfg.freeze_backbone:
        num_layers = param_layer_ids(model)[1]
        decay = auto_layer_decay(num_layers)
        recipe.setdefault("inferred", []).append(
            f"layer_decay {decay:g} ({num_layers} layers: the first trains at {FIRST_LAYER_LR_FACTOR:g} of the "
            "head's lr)")
    if decay is not None and decay >= 1.0:
        decay = None
    recipe["layer_decay"] = decay
    return decay


def _broadcast_float(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` on every process (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return float(t.item())
    return value


def _resolve_lr(cfg: TrainConfig, info: DistInfo, model: nn.Module, optimizer: torch.optim.Optimizer,
                data: dict[str, Any], ckpt: dict[str, Any] | None, recipe: dict[str, Any]
                ) -> tuple[float, LRFinderResult | None]:
    """The peak LR: ``--lr``; on resume the checkpoint's; else the LR range test's suggestion
    (each process tests on its own shard, rank 0's suggestion is used by all)."""
    if not isinstance(cfg.lr, str):
        recipe["lr_source"] = "--lr"
        return float(cfg.lr), None
    if ckpt is not None:
        old = (ckpt.get("recipe") or {}).get("lr", (ckpt.get("args") or {}).get("lr"))
        if isinstance(old, (int, float)):
            recipe["lr_source"] = "checkpoint"
            return float(old), None
    device = info.device
    sampler, seeded = data["train_sampler"], data["seeded_train"]

    def on_epoch(k: int) -> None:  # epochs the training itself never uses
        sampler.set_epoch(1_000_000 + k)
        seeded.seed = _epoch_seed(cfg.seed, 1_000_000 + k, 0)

    _seed_all(_epoch_seed(cfg.seed, 999_999, info.rank))
    data["gen"].manual_seed(_epoch_seed(cfg.seed, 999_999, info.rank))
    t0 = time.perf_counter()
    res = lr_range_test(model, data["train_loader"], optimizer, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
                        device, num_steps=cfg.lr_finder_steps, autocast=lambda: _autocast(device, cfg.amp),
                        on_epoch=on_epoch, channels_last=cfg.channels_last)
    lr = res.suggestion if math.isfinite(res.suggestion) else 1e-3
    lr = _broadcast_float(min(1.0, max(1e-6, lr)), device)
    recipe["lr_source"] = "lr range test" if math.isfinite(res.suggestion) else "fallback 1e-3 (range test failed)"
    recipe["lr_finder"] = {**res.to_dict(), "time_s": round(time.perf_counter() - t0, 2)}
    recipe.setdefault("inferred", []).append(
        f"lr {lr:.3g} (LR range test, {len(res.lrs)} steps: {res.rule}; min loss at {res.lr_min_loss:.3g}, "
        f"steepest at {res.lr_steepest:.3g})")
    return lr, res


def _setup_optimisation(cfg: TrainConfig, model: nn.Module, num_classes: int, steps_per_epoch: int,
                        device: torch.device, layer_decay: float | None = None, lr: float | None = None,
                        ) -> dict[str, Any]:
    """Optimizer, schedule, grad scaler, EMA, mixup and loss (the :class:`_Run` fields).

    ``lr`` defaults to ``cfg.lr`` (numeric) or a placeholder until :func:`_resolve_lr` rebuilds
    the schedule; ``layer_decay`` to ``cfg.layer_decay``.
    """
    if lr is None:
        lr = float(cfg.lr) if not isinstance(cfg.lr, str) else 1e-3
    if layer_decay is None:
        layer_decay = cfg.layer_decay
    optimizer = create_optimizer(model, cfg.opt, lr, cfg.weight_decay, cfg.momentum, layer_decay=layer_decay)
    scheduler = _make_scheduler(cfg, optimizer, lr, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "float16")
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema else None
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.label_smoothing)
        criterion: nn.Module = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return dict(optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema, mixup=mixup, criterion=criterion)


def _warmup_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """``--warmup`` epochs in steps; unset: 25% of all steps for ``onecycle``, none otherwise."""
    if cfg.warmup is not None:
        return int(round(cfg.warmup * steps_per_epoch))
    return max(1, int(round(0.25 * cfg.epochs * steps_per_epoch))) if cfg.sched == "onecycle" else 0


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, lr: float, steps_per_epoch: int) -> Scheduler:
    return Scheduler(optimizer, lr, cfg.epochs * steps_per_epoch, steps_per_epoch, cfg.sched,
                     warmup_steps=_warmup_steps(cfg, steps_per_epoch), warmup_lr_factor=cfg.warmup_lr_factor,
                     min_lr=cfg.min_lr, decay_epochs=cfg.decay_epochs, decay_rate=cfg.decay_rate)


def _setup(cfg: TrainConfig, info: DistInfo) -> _Run:
    """Check the config, then build data, model and optimisation, resuming from ``cfg.resume``.

    Settings left unset follow the data and the model (see :mod:`visionzoo.train.defaults`); the
    resolved values are collected in ``run.recipe`` (written to ``recipe.json``).
    """
    _check_config(cfg)
    device = info.device
    if cfg.threads is not None:
        torch.set_num_threads(max(1, cfg.threads))
    ckpt = load_training_checkpoint(cfg.resume) if cfg.resume else None
    out_dir = _output_dir(cfg, info)
    classes = _find_train_classes(cfg)
    recipe: dict[str, Any] = {"inferred": []}
    if cfg.num_classes is None:
        recipe["inferred"].append(f"num_classes {len(classes)} (class folders)")
    train_set, val_set = build_datasets(cfg, None, None, seed=cfg.seed)
    check_images(train_set, val_set)  # one error naming every unreadable file, before any step
    needs_stats = cfg.in_chans is None or cfg.img_size is None
    stats = inspect_images([p for p, _ in train_set.samples]) if needs_stats else None
    model, data_cfg, minfo = _setup_model(cfg, len(classes), device, stats, recipe, len(train_set))
    data = _setup_data(cfg, info, data_cfg, train_set, val_set, recipe)
    steps = len(data["train_loader"])
    layer_decay = _resolve_layer_decay(cfg, model, recipe)
    optim = _setup_optimisation(cfg, model, len(classes), steps, device, layer_decay)
    lr, finder = _resolve_lr(cfg, info, model, optim["optimizer"], data, ckpt, recipe)
    optim["scheduler"] = _make_scheduler(cfg, optim["optimizer"], lr, steps)
    head_steps = 0
    if ckpt is None and not cfg.freeze_backbone:
        if cfg.head_warmup is not None:
            head_steps = int(round(cfg.head_warmup * steps))
        elif cfg.pretrained:
            head_steps = head_warmup_steps(steps)
            recipe["inferred"].append(f"head warm-up {head_steps} steps (pretrained: backbone frozen first)")
    recipe.update(_recipe_values(cfg, len(classes), classes, lr, steps, head_steps, len(train_set),
                                 len(val_set) if val_set is not None else 0, info.world_size))
    run = _Run(cfg=cfg, info=info, out_dir=out_dir, classes=classes, model=model, train_model=model,
               data_cfg=data_cfg, minfo=minfo, **data, **optim, recipe=recipe, lr_finder=finder)
    if ckpt is not None:
        _resume(run, ckpt)
    if info.distributed:
        run.train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return run


def _recipe_values(cfg: TrainConfig, num_classes: int, classes: list[str], lr: float, steps_per_epoch: int,
                   head_steps: int, n_train: int, n_val: int, world_size: int) -> dict[str, Any]:
    """The resolved optimisation settings of a run (the ``recipe.json`` keys besides data/augmentation)."""
    return {
        "model": cfg.model, "pretrained": cfg.pretrained, "num_classes": num_classes, "classes": classes,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "world_size": world_size,
        "steps_per_epoch": steps_per_epoch, "train_images": n_train, "val_images": n_val,
        "opt": cfg.opt, "lr": lr, "weight_decay": cfg.weight_decay, "sched": cfg.sched,
        "warmup_steps": _warmup_steps(cfg, steps_per_epoch), "warmup_lr_factor": cfg.warmup_lr_factor,
        "min_lr": cfg.min_lr, "label_smoothing": cfg.label_smoothing, "head_warmup_steps": head_steps,
        "mixup": cfg.mixup, "cutmix": cfg.cutmix, "ema": cfg.ema, "amp": cfg.amp, "seed": cfg.seed,
        "freeze_backbone": cfg.freeze_backbone, "head": cfg.head,
    }


def _resume(run: _Run, ckpt: dict[str, Any]) -> None:
    """Load model / optimizer / schedule / EMA / scaler / RNG state and the history from ``ckpt``."""
    cfg, info = run.cfg, run.info
    _check_resume_compat(ckpt, run.minfo, run.classes, str(cfg.resume))
    try:
        run.model.load_state_dict(ckpt["state_dict"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise ResumeError(f"cannot resume from {cfg.resume}: state does not fit this run "
                          f"({str(e).splitlines()[0]})") from e
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.ema is not None:
        if ckpt.get("state_dict_ema") is not None:
            run.ema.module.load_state_dict(ckpt["state_dict_ema"])
            run.ema.num_updates.fill_(int(ckpt.get("ema_updates", 0)))
        else:
            _log(info, "warning: checkpoint has no EMA weights; the EMA restarts from the current weights")
    if ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    if ckpt.get("rng"):
        set_rng_state(ckpt["rng"])
    run.start_epoch = int(ckpt["epoch"]) + 1
    run.history = [dict(r) for r in ckpt.get("history", [])]
    run.best = float(ckpt.get("best_top1", float("-inf")))
    _log(info, f"resumed from {cfg.resume}: epoch {run.start_epoch}/{cfg.epochs} done, continuing")
    old_args = ckpt.get("args") or {}
    changed = [k for k in ("seed", "batch_size", "lr", "epochs", "opt", "sched", "mixup", "cutmix")
               if k in old_args and old_args[k] != getattr(cfg, k)]
    if ckpt.get("world_size", info.world_size) != info.world_size:
        changed.append("number of processes")
    if changed:
        _log(info, f"warning: {', '.join(changed)} differ from the checkpoint's run; the result will not "
                   "match an uninterrupted run")


def _start_output(run: _Run) -> None:
    """``args.json`` (and the resumed history) in the output folder, and the run's summary line."""
    cfg, info, out_dir = run.cfg, run.info, run.out_dir
    if info.primary:
        out_dir.mkdir(parents=True, exist_ok=True)
        if run.lr_finder is not None:
            try:
                plot = plot_lr_finder(run.lr_finder, out_dir / "lr_finder.png")
                run.recipe["lr_finder"]["plot"] = plot.name if plot is not None else None
            except Exception as e:  # a plotting problem must never stop training
                print(f"warning: could not draw the LR finder plot: {e}", file=sys.stderr)
            write_csv(out_dir / "lr_finder.csv", [{"lr": a, "loss": b, "smoothed_loss": c} for a, b, c in
                                                  zip(run.lr_finder.lrs, run.lr_finder.losses, run.lr_finder.smoothed)])
        write_recipe(out_dir, run.recipe)
        (out_dir / "args.json").write_text(json.dumps({**cfg.to_dict(), "world_size": info.world_size,
                                                       "data_config": run.data_cfg, "classes": run.classes},
                                                      indent=2))
        if run.history:  # drop rows a killed run logged after its last checkpoint
            write_csv(out_dir / "metrics.csv", run.history)
    if run.recipe.get("inferred"):
        _log(info, "inferred: " + "; ".join(run.recipe["inferred"]))
    n_train = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    _log(info, f"{cfg.model}: {run.num_classes} classes, in_chans {run.data_cfg['input_size'][0]}, "
               f"input {tuple(run.data_cfg['input_size'])}, {n_train / 1e6:.2f}M trainable params; "
               f"{len(run.train_set)} train / {len(run.val_set) if run.val_set else 0} val "
               f"images; {info.world_size} process(es) × batch {cfg.batch_size}; {run.steps_per_epoch} steps/epoch; "
               f"device {info.device}; output {out_dir}")


def write_recipe(out_dir: str | Path, recipe: dict[str, Any]) -> Path:
    """``recipe.json``: the resolved settings of a run (what ``auto`` became), to repeat or compare it."""
    path = Path(out_dir) / "recipe.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(recipe, indent=2, default=lambda v: list(v) if isinstance(v, tuple) else str(v)))
    tmp.replace(path)
    return path


def _head_warmup(run: _Run) -> None:
    """Train only the new head for ``recipe['head_warmup_steps']`` steps with the backbone frozen
    (BatchNorm statistics too), before the whole net trains: a random head's large gradients would
    otherwise pull the pretrained layers off in the first steps. One-cycle schedule at the run's lr
    on its own optimizer; under torchrun the head's gradients are averaged by hand (the DDP wrapper
    is built for all parameters)."""
    cfg, info, model = run.cfg, run.info, run.model
    steps, lr = int(run.recipe["head_warmup_steps"]), float(run.recipe["lr"])
    flags = [p.requires_grad for p in model.parameters()]
    t0 = time.perf_counter()
    try:
        freeze_backbone(model)
        head = [p for p in model.parameters() if p.requires_grad]
        opt = create_optimizer(model, cfg.opt, lr, cfg.weight_decay, cfg.momentum)
        sched = Scheduler(opt, lr, steps, steps, "onecycle", warmup_steps=max(1, steps // 4),
                          warmup_lr_factor=cfg.warmup_lr_factor)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        s = _epoch_seed(cfg.seed, 999_998, info.rank)
        _seed_all(s)
        run.gen.manual_seed(s)
        model.train()
        set_frozen_norms_eval(model)
        losses: list[float] = []
        k = 0
        while len(losses) < steps:
            run.train_sampler.set_epoch(2_000_000 + k)
            run.seeded_train.seed = _epoch_seed(cfg.seed, 2_000_000 + k, 0)
            k += 1
            for x, y in run.train_loader:
                if len(losses) >= steps:
                    break
                sched.step(len(losses))
                x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(info.device, cfg.amp):
                    loss = criterion(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if info.distributed:
                    for p in head:
                        if p.grad is not None:
                            dist.all_reduce(p.grad)
                            p.grad.div_(info.world_size)
                opt.step()
                losses.append(float(loss.detach()))
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train()
    if run.ema is not None:  # start the average from the warmed-up head, not the random one
        run.ema = ModelEma(model, cfg.ema_decay)
    n = max(1, len(losses) // 5)
    _log(info, f"head warm-up: {len(losses)} steps, backbone frozen, loss {sum(losses[:n]) / n:.4g} -> "
               f"{sum(losses[-n:]) / n:.4g} ({time.perf_counter() - t0:.1f} s)")


# --- one epoch: train, evaluate, log, checkpoint

def _run_epoch(run: _Run, epoch: int) -> tuple[dict[str, Any], bool]:
    """Train one epoch (reseeded from ``(seed, epoch, rank)``) and evaluate; appends the metrics row
    to the history, updates the best score and logs. Returns the row and whether it is the best."""
    cfg, info = run.cfg, run.info
    t0 = time.perf_counter()
    s = _epoch_seed(cfg.seed, epoch, info.rank)
    _seed_all(s)
    run.gen.manual_seed(s)
    run.seeded_train.seed = _epoch_seed(cfg.seed, epoch, 0)
    run.train_sampler.set_epoch(epoch)
    stats = _train_one_epoch(run.train_model, run.model, run.train_loader, run.optimizer, run.scheduler, run.scaler,
                             run.criterion, run.mixup, run.ema, cfg, info, epoch, run.steps_per_epoch)
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": stats["lr"], "train_loss": stats["loss"],
                           "train_top1": stats["top1"]}
    row.update(_evaluate_epoch(run))
    row["epoch_time_s"] = time.perf_counter() - t0
    run.history.append(row)
    score = row.get("val_top1", -row["train_loss"])
    is_best = score > run.best
    run.best = max(run.best, score)
    row["best_top1"] = run.best if run.val_loader is not None else float("nan")
    _log(info, f"epoch {epoch + 1}/{cfg.epochs}  " + "  ".join(
        f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch",) and isinstance(v, float)))
    return row, is_best


def _evaluate_epoch(run: _Run) -> dict[str, float]:
    """Validation metrics of the model (and of its EMA), with rank 0's buffers on every process."""
    if run.val_loader is None:
        return {}
    cfg, info, device = run.cfg, run.info, run.info.device
    if info.distributed:
        _broadcast_buffers(run.model)
    m = evaluate(run.model, run.val_loader, device, cfg.amp, cfg.channels_last, cfg.progress if info.primary else False)
    out = dict(val_loss=m["loss"], val_top1=m["top1"], val_top5=m["top5"])
    if run.ema is not None:
        if info.distributed:
            _broadcast_buffers(run.ema.module)
        me = evaluate(run.ema.module, run.val_loader, device, cfg.amp, cfg.channels_last, False)
        out.update(ema_val_loss=me["loss"], ema_val_top1=me["top1"], ema_val_top5=me["top5"])
    return out


def _checkpoint_state(run: _Run, epoch: int) -> dict[str, Any]:
    ema, scaler = run.ema, run.scaler
    return {
        "format": FORMAT, "epoch": epoch, "state_dict": run.model.state_dict(),
        "state_dict_ema": ema.module.state_dict() if ema is not None else None,
        "ema_updates": int(ema.num_updates) if ema is not None else 0,
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": get_rng_state(), "args": run.cfg.to_dict(), "history": run.history, "best_top1": run.best,
        "class_names": run.classes, "model_info": run.minfo,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in run.data_cfg.items()},
        "world_size": run.info.world_size, "recipe": run.recipe,
    }


def _save_epoch(run: _Run, epoch: int, is_best: bool) -> None:
    """Metrics CSV and plot, ``last.pth``, ``model_best.pth`` on a new best, ``checkpoint-<n>.pth``."""
    out_dir, keep = run.out_dir, run.cfg.keep_checkpoints
    write_csv(out_dir / "metrics.csv", run.history)
    try:
        plot_metrics(run.history, out_dir)
    except Exception as e:  # a plotting problem must never stop training
        print(f"warning: could not draw the metrics plot: {e}", file=sys.stderr)
    state = _checkpoint_state(run, epoch)
    save_checkpoint(state, out_dir / "last.pth")
    if is_best:
        save_checkpoint(state, out_dir / "model_best.pth")
    if keep > 0:
        save_checkpoint(state, out_dir / f"checkpoint-{epoch + 1}.pth")
        old = out_dir / f"checkpoint-{epoch + 1 - keep}.pth"
        if old.exists():
            old.unlink()


def _train_one_epoch(train_model: nn.Module, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                     scheduler: Scheduler, scaler: torch.amp.GradScaler, criterion: nn.Module, mixup: Mixup | None,
                     ema: ModelEma | None, cfg: TrainConfig, info: DistInfo, epoch: int,
                     steps_per_epoch: int) -> dict[str, float]:
    device = info.device
    train_model.train()
    if cfg.freeze_backbone:
        set_frozen_norms_eval(model)
    loss_m, correct, seen = AverageMeter(), 0, 0
    it: Any = loader
    bar = None
    if info.primary and cfg.progress is not False:
        from tqdm import tqdm
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, total=steps_per_epoch,
                   disable=cfg.progress is None and not sys.stderr.isatty())
        it = bar
    lr = scheduler.get_last_lr()
    for step, (x, y) in enumerate(it):
        lr = scheduler.step(epoch * steps_per_epoch + step)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target: torch.Tensor = y
        if mixup is not None:
            x, target = mixup(x, y)
        with _autocast(device, cfg.amp):
            logits = train_model(x)
            loss = criterion(logits.float(), target)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss is {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                               "try a lower --lr, --clip-grad, or --amp none")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update(model)
        loss_m.update(float(loss.detach()), y.shape[0])
        if mixup is None:
            correct += topk_correct(logits.detach(), y, (1,))[0]
        seen += y.shape[0]
        if bar is not None:
            bar.set_postfix(loss=f"{loss_m.avg:.4f}", lr=f"{lr:.3g}")
    if bar is not None:
        bar.close()
    loss_sum, n, c = all_reduce_sum([loss_m.sum, loss_m.count, correct], device)
    return {"loss": loss_sum / max(n, 1), "top1": 100.0 * c / max(n, 1) if mixup is None else float("nan"), "lr": lr}
