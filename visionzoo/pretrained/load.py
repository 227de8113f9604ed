"""Reading checkpoints safely and fitting them to a model (in_chans, num_classes, strictness)."""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from .cfg import PretrainedCfg
from .sources import resolve_weights_file

__all__ = ["load_state_dict_file", "load_checkpoint", "resume_checkpoint", "load_pretrained", "adapt_input_conv",
           "CheckpointError", "clean_state_dict", "load_into_model", "LoadReport", "skip_init_on_meta",
           "materialize_empty"]

_logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
FilterFn = Callable[[StateDict, nn.Module], StateDict]


# in-place ops that only change values: on a meta tensor (no values) they are no-ops
_VALUE_INPLACE_OPS = frozenset({
    "normal_", "uniform_", "zero_", "fill_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "clamp_min_",
    "clamp_max_", "copy_", "exponential_", "bernoulli_", "random_", "log_normal_", "cauchy_", "geometric_",
    "fill_diagonal_", "abs_", "sqrt_", "neg_", "exp_", "log_", "masked_fill_", "index_fill_", "addcmul_", "lerp_",
})


class skip_init_on_meta(torch.overrides.TorchFunctionMode):  # noqa: N801 - used as a context manager
    """Inside a ``torch.device("meta")`` construction, make weight-init calls on meta tensors no-ops.

    A meta tensor has no values, so ``normal_``/``uniform_``/``trunc_normal_``... compute nothing,
    but their meta kernels are Python references: the first such call in a process imported
    ``torch._refs``/``torch._decomp`` (2-7 s here), which was most of ``create_model(pretrained=True)``
    from a local file. Shape-changing in-place ops (``resize_``, ``t_``, ...) still run.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init functions pass it by keyword
        if (isinstance(target, torch.Tensor) and target.is_meta
                and (getattr(func, "__name__", "") in _VALUE_INPLACE_OPS
                     or getattr(func, "__module__", "") == "torch.nn.init")):
            return target
        return func(*args, **kwargs)


def materialize_empty(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """``model.to_empty(device=...)`` without ``empty_like``: on meta tensors that goes through
    Python reference kernels whose first use imports sympy (~2 s per process). Values are
    uninitialised; parameters keep ``requires_grad``."""
    return model._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device) if t.is_meta else t)


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable or does not fit the model."""


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.safetensors`` file or a torch pickle with ``weights_only=True`` (no code runs).

    Corrupt, truncated or foreign files raise :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise many types for damaged files
        size = path.stat().st_size
        raise CheckpointError(f"cannot read checkpoint {path} ({size} bytes): corrupt, truncated or not a "
                              f"weights file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e


def clean_state_dict(obj: Mapping[str, Any], use_ema: bool = False) -> StateDict:
    """Extract the model weights from a full training checkpoint and strip ``module.`` prefixes."""
    sd: Any = obj
    if isinstance(obj, Mapping):
        order = ("state_dict_ema", "model_ema", "state_dict", "model") if use_ema else ("state_dict", "model")
        for key in order:
            if key in obj and isinstance(obj[key], Mapping):
                sd = obj[key]
                break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError("checkpoint holds no state_dict of tensors (looked for 'state_dict', 'model' "
                              "or a plain dict of tensors)")
    out: StateDict = {}
    for k, v in sd.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """Fit an RGB first-conv weight ``[O, 3, kh, kw]`` to ``in_chans`` input channels.

    One channel sums the RGB filters (a gray image has the response of an RGB image with equal
    channels). Other counts repeat the RGB filters cyclically and scale by ``3 / in_chans`` so the
    expected activation magnitude stays the same.
    """
    dtype = weight.dtype
    w = weight.float()
    o, i, kh, kw = w.shape
    if in_chans == i:
        return weight
    if in_chans == 1:
        if i > 3:  # space-to-depth stems: groups of 3
            w = w.reshape(o, i // 3, 3, kh, kw).sum(dim=2)
        else:
            w = w.sum(dim=1, keepdim=True)
    elif i != 3:
        raise CheckpointError(f"cannot adapt a first conv with {i} input channels to {in_chans}")
    else:
        reps = math.ceil(in_chans / 3)
        w = w.repeat(1, reps, 1, 1)[:, :in_chans] * (3 / float(in_chans))
    return w.to(dtype)


def _as_tuple(x: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if not x:
        return ()
    return (x,) if isinstance(x, str) else tuple(x)


def _describe_mismatch(model: nn.Module, sd: Mapping[str, torch.Tensor], limit: int = 8) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def load_into_model(model: nn.Module, sd: Mapping[str, torch.Tensor], strict: bool = True,
                    allow_missing: tuple[str, ...] = (), name: str = "checkpoint") -> None:
    """``load_state_dict`` with one readable error listing missing/unexpected keys and shapes.

    ``allow_missing`` key prefixes may be absent (a dropped classifier).
    """
    own = model.state_dict()
    problem = any(tuple(sd[k].shape) != tuple(own[k].shape) for k in own if k in sd)
    missing = [k for k in own if k not in sd and not k.startswith(allow_missing)]
    unexpected = [k for k in sd if k not in own]
    if problem or (strict and (missing or unexpected)):
        arch = getattr(model, "pretrained_cfg", None)
        arch = getattr(arch, "architecture", None) or type(model).__name__
        raise CheckpointError(f"{name} does not fit {arch}: {_describe_mismatch(model, sd)}")
    model.load_state_dict(sd, strict=False)


def _remap_by_order(sd: Mapping[str, torch.Tensor], model: nn.Module) -> StateDict:
    """Give the checkpoint's tensors the model's keys, pairing both in order (shapes must agree)."""
    own = model.state_dict()
    if len(sd) != len(own):
        raise CheckpointError(f"remap: checkpoint has {len(sd)} entries, model {len(own)}")
    out: StateDict = {}
    for (key, mine), (ck_key, value) in zip(own.items(), sd.items()):
        if tuple(mine.shape) != tuple(value.shape):
            raise CheckpointError(f"remap: {ck_key} {tuple(value.shape)} does not fit {key} {tuple(mine.shape)}")
        out[key] = value
    return out


def load_checkpoint(model: nn.Module, checkpoint_path: str | os.PathLike, use_ema: bool = True,
                    device: str | torch.device = "cpu", strict: bool = True, remap: bool = False,
                    filter_fn: FilterFn | None = None) -> Any:
    """Load a full training checkpoint or plain state_dict into an existing model.

    Same signature as the reference library's. ``use_ema`` takes the EMA weights
    (``state_dict_ema`` / ``model_ema``) when the checkpoint has them; ``device`` is where the
    file's tensors are read to before being copied into the model; ``remap`` pairs the
    checkpoint's tensors with the model's keys by order (for renamed but identically laid-out
    models); ``filter_fn(state_dict, model)`` rewrites the state_dict first. Foreign layouts that
    visionzoo knows (see :mod:`visionzoo.convert`) are converted. Returns the ``missing_keys`` /
    ``unexpected_keys`` named tuple of ``load_state_dict``; a mismatch under ``strict`` raises
    :class:`CheckpointError` listing the keys and shapes.
    """
    from ..convert import maybe_convert

    sd = clean_state_dict(load_state_dict_file(checkpoint_path), use_ema=use_ema)
    if str(device) != "cpu":
        sd = {k: v.to(device) for k, v in sd.items()}
    if remap:
        sd = _remap_by_order(sd, model)
    else:
        sd = maybe_convert(sd, model)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    load_into_model(model, sd, strict=strict, name=f"checkpoint {checkpoint_path}")
    own = model.state_dict()
    return nn.modules.module._IncompatibleKeys([k for k in own if k not in sd], [k for k in sd if k not in own])


def resume_checkpoint(model: nn.Module, checkpoint_path: str | os.PathLike, optimizer: Any = None,
                      loss_scaler: Any = None, log_info: bool = True) -> int | None:
    """Restore model (and optimizer / loss scaler) state from a training checkpoint.

    Same signature as the reference library's. Reads the model weights (``state_dict``), the
    ``optimizer`` state into ``optimizer`` and the scaler state into ``loss_scaler`` (under its
    ``state_dict_key``, else ``scaler`` / ``amp_scaler``). Returns the epoch to resume at: the
    epoch after the last completed one for visionzoo training checkpoints (and the reference's
    ``version`` 2 ones), or ``None`` for a checkpoint without an epoch (plain weights).
    """
    ckpt = load_state_dict_file(checkpoint_path)
    sd = clean_state_dict(ckpt, use_ema=False)
    load_into_model(model, sd, strict=True, name=f"checkpoint {checkpoint_path}")
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        if log_info:
            print(f"Loaded weights from {checkpoint_path} (no training state)")
        return None
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if loss_scaler is not None:
        for key in (getattr(loss_scaler, "state_dict_key", None), "scaler", "amp_scaler"):
            if key and ckpt.get(key) is not None:
                loss_scaler.load_state_dict(ckpt[key])
                break
    epoch = ckpt.get("epoch")
    if epoch is None:
        return None
    resume_epoch = int(epoch)
    fmt = ckpt.get("format")
    if (isinstance(fmt, str) and fmt.startswith("visionzoo.train")) or int(ckpt.get("version", 0) or 0) > 1:
        resume_epoch += 1  # the checkpoint holds the last completed epoch
    if log_info:
        print(f"Loaded checkpoint {checkpoint_path} (epoch {epoch})")
    return resume_epoch


def _summarize_keys(keys: list[str], limit: int = 6) -> str:
    """``attn_pool.* (13), norm.weight``: group keys by their first component when many share it."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split(".", 1)[0], []).append(k)
    parts = [f"{g}.* ({len(ks)})" if len(ks) > 2 else ", ".join(ks) for g, ks in groups.items()]
    more = f", ... (+{len(parts) - limit} groups)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did besides copying tensors one to one.

    ``dropped``: checkpoint entries not loaded (a classifier for another ``num_classes``, an
    attention-pool head the model was built without, ...). ``initialized``: model entries that
    did not come from the checkpoint (freshly initialised). ``classifier_dropped``: the caller
    must initialise a new classifier.
    """

    path: str = ""
    classifier_dropped: bool = False
    dropped: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"loaded {self.path}"]
        if self.dropped:
            parts.append(f"dropped {len(self.dropped)} checkpoint weights: {_summarize_keys(self.dropped)}")
        if self.initialized:
            parts.append(f"initialised {len(self.initialized)} model weights: {_summarize_keys(self.initialized)}")
        return "; ".join(parts)


def load_pretrained(
    model: nn.Module,
    cfg: PretrainedCfg,
    *,
    num_classes: int,
    in_chans: int = 3,
    filter_fn: FilterFn | None = None,
    strict: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> LoadReport:
    """Fetch ``cfg``'s weights and load them, adapting first conv and classifier.

    Returns a :class:`LoadReport`; its ``classifier_dropped`` tells the caller to initialise a
    fresh classifier. Dropped or freshly initialised weights are also logged (warning level when
    other weights than the classifier are dropped).
    """
    from ..convert import maybe_convert

    path = resolve_weights_file(cfg, cache_dir=cache_dir, progress=progress)
    sd = maybe_convert(clean_state_dict(load_state_dict_file(path)), model, cfg.converter)
    report = LoadReport(path=str(path))
    if filter_fn is not None:
        before = set(sd)
        sd = filter_fn(sd, model)
        report.dropped = [k for k in before if k not in sd]
        report.initialized = [k for k in sd if k not in before]
    if in_chans != 3:
        for conv in _as_tuple(cfg.first_conv):
            key = conv + ".weight"
            if key in sd:
                sd[key] = adapt_input_conv(in_chans, sd[key])
    dropped = False
    other_dropped = bool(report.dropped)
    classifiers = _as_tuple(cfg.classifier)
    if classifiers and num_classes != cfg.num_classes:
        prefixes = tuple(c + "." for c in classifiers)
        report.dropped += [k for k in sd if k.startswith(prefixes)]
        sd = {k: v for k, v in sd.items() if not k.startswith(prefixes)}
        dropped = True
    elif classifiers and cfg.label_offset and num_classes == cfg.num_classes - cfg.label_offset:
        for c in classifiers:  # drop the background class
            for leaf in ("weight", "bias"):
                if f"{c}.{leaf}" in sd:
                    sd[f"{c}.{leaf}"] = sd[f"{c}.{leaf}"][cfg.label_offset:]
    allow = tuple(c + "." for c in classifiers) if dropped else ()
    load_into_model(model, sd, strict=strict, allow_missing=allow, name=f"weights {path}")
    report.classifier_dropped = dropped
    report.initialized += [k for k in model.state_dict() if k not in sd and k not in report.initialized]
    arch = cfg.architecture or type(model).__name__
    if other_dropped:
        _logger.warning("%s: %s", arch, report)
    elif report.dropped or report.initialized:
        _logger.info("%s: %s", arch, report)
    return report
