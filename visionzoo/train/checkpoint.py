"""Training checkpoints: atomic writes, RNG state capture, and validated loading for ``--resume``.

A checkpoint is a plain dict readable with ``torch.load(weights_only=True)`` (no pickled code):
``state_dict`` (model), ``state_dict_ema``, ``optimizer``, ``scheduler``, ``scaler``, ``epoch``
(the last *completed* epoch, 0-based), ``rng``, ``args``, ``history`` (metric rows so far),
``class_names``, ``model_info`` (how to rebuild the model) and ``format``.
``visionzoo.load_checkpoint`` / ``create_model(checkpoint_path=...)`` read its weights directly.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_training_checkpoint", "get_rng_state", "set_rng_state",
           "ResumeError", "FORMAT"]

FORMAT = "visionzoo.train/1"
REQUIRED_KEYS = ("state_dict", "optimizer", "scheduler", "epoch", "args")


class ResumeError(RuntimeError):
    """A checkpoint cannot be used to resume this run."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives during a checkpoint write until the write is done.

    An interrupt inside ``torch.save`` surfaces as an obscure stream-writer error instead of a
    ``KeyboardInterrupt``; deferring it lets the write finish and then interrupts as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` with ``torch.save`` to a temp file in the same directory, fsync, rename.

    A reader (or a run killed mid-write) sees either the previous file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with _sigint_deferred():  # the write and the rename happen whole, or not at all
            with open(tmp, "wb") as f:
                torch.save(dict(state), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states, in weights_only-loadable types."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured (missing entries are left alone)."""
    if "python" in state:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss)))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a training checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        ResumeError: unreadable/corrupt/truncated file, or not a visionzoo training checkpoint
            (e.g. a bare weights file, which can be used with ``--initial-checkpoint`` instead).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ResumeError(f"cannot read resume checkpoint {path} ({path.stat().st_size} bytes): corrupt or "
                          f"truncated ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(ckpt, dict):
        raise ResumeError(f"{path} is not a training checkpoint (got {type(ckpt).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        hint = " It looks like a weights-only file; use --initial-checkpoint to start from it." \
            if all(isinstance(v, torch.Tensor) for v in ckpt.values()) else ""
        raise ResumeError(f"{path} is not a visionzoo training checkpoint: missing {', '.join(missing)}.{hint}")
    return ckpt
