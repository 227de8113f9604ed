"""Export a model to ONNX, TorchScript or a ``torch.export`` program, with a parity check.

Every export is checked by default: the saved file is loaded back with its own runtime
(onnxruntime, ``torch.jit.load``, ``torch.export.load``) and run on a fixed random input; its
output is compared with the eager model's. The check passes when
``max|exported - eager| <= atol + rtol * max|eager|``.

* ``onnx``: ``torch.onnx.export`` with the ``torch.export``-based (dynamo) exporter, falling
  back to the legacy TorchScript-based exporter if that fails (``onnx_dynamo=None``). Needs the
  ``export`` extra (``onnx``, ``onnxscript``; ``onnxruntime`` for the check).
* ``torchscript``: ``torch.jit.script`` (models created by name get ``scriptable=True`` layer
  variants) or ``torch.jit.trace`` with ``jit_mode='trace'``.
* ``exported-program``: ``torch.export.export`` saved with ``torch.export.save`` (``.pt2``).

Models created by name for ONNX / ``torch.export`` get ``exportable=True`` layer variants.
With ``dynamic_batch`` the batch dimension is symbolic and the check also runs at a second
batch size. Each file carries the model's preprocessing metadata (``visionzoo.json``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from .inference import example_input, resolve_input_size
from .compare import max_abs, max_abs_diff, output_tensors

__all__ = ["FORMATS", "ExportResult", "ExportError", "ExportParityError", "export_model",
           "create_export_model", "load_exported", "run_exported", "check_export"]

# format -> default file suffix
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
_ALIASES = {"ts": "torchscript", "jit": "torchscript", "ep": "exported-program", "export": "exported-program",
            "torch.export": "exported-program", "pt2": "exported-program"}

_KNOWN_SUFFIXES = {".onnx", ".pt", ".pt2", ".pth", ".ts", ".jit", ".zip"}

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


class ExportError(RuntimeError):
    """The model could not be exported in the requested format."""


class ExportParityError(RuntimeError):
    """The exported file's output differs from the eager model's beyond tolerance."""

    def __init__(self, message: str, result: "ExportResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class ExportResult:
    """What was exported and how it compared with the eager model."""

    fmt: str
    path: Path
    input_shape: tuple[int, ...]
    dynamic_batch: bool
    exporter: str
    export_s: float
    file_bytes: int
    max_abs_diff: float | None = None
    tolerance: float | None = None
    passed: bool | None = None
    checked_batch_sizes: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        size = self.file_bytes / 2 ** 20
        line = (f"{self.fmt}: {self.path} ({size:.1f} MiB, {self.exporter}, input {list(self.input_shape)}"
                f"{', dynamic batch' if self.dynamic_batch else ''}, {self.export_s:.1f}s)")
        if self.passed is None:
            return line + "\n  parity: not checked"
        verdict = "OK" if self.passed else "FAILED"
        return (line + f"\n  parity vs eager at batch {self.checked_batch_sizes}: max abs diff "
                       f"{self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}) {verdict}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _normalize_format(fmt: str) -> str:
    key = fmt.lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    return key


def create_export_model(
    name: str,
    fmt: str,
    *,
    img_size: int | Sequence[int] | None = None,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``create_model`` with the layer variants ``fmt`` needs, in eval mode.

    Fixed-input-size models (ViTs, Swin, ...) are built for ``img_size`` when one is given and
    the model kwargs (``model_kwargs`` and ``**kwargs``) do not set their own ``img_size``.
    """
    from ..factory import create_model
    from ..registry import get_pretrained_cfg

    fmt = _normalize_format(fmt)
    kwargs = {**dict(model_kwargs or {}), **kwargs}
    if img_size is not None and "img_size" not in kwargs:
        cfg = get_pretrained_cfg(name)
        if cfg is not None and cfg.fixed_input_size:
            kwargs["img_size"] = img_size if isinstance(img_size, int) else tuple(img_size)[-2:]
    flags = dict(scriptable=True) if fmt == "torchscript" else dict(exportable=True)
    model = create_model(name, pretrained=pretrained, checkpoint_path=checkpoint, **flags, **kwargs)
    return model.eval()


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence deprecation chatter and the exporter's progress log lines."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*TracerWarning.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
            warnings.filterwarnings("ignore", message=".*TorchScript type system.*")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _metadata(model: nn.Module, name: str | None, input_shape: Sequence[int]) -> dict[str, Any]:
    from .. import __version__

    cfg = getattr(model, "pretrained_cfg", None)
    meta: dict[str, Any] = {"visionzoo_version": __version__, "architecture": name, "input_size": list(input_shape[1:])}
    if cfg is not None and hasattr(cfg, "to_dict"):
        d = cfg.to_dict()
        meta["architecture"] = name or d.get("architecture")
        meta["tag"] = d.get("tag")
        for key in ("mean", "std", "interpolation", "crop_pct", "crop_mode"):
            if key in d:
                meta[key] = list(d[key]) if isinstance(d[key], tuple) else d[key]
    meta["num_classes"] = getattr(model, "num_classes", None)
    return meta


def _batch_dim(dynamic_batch: bool) -> Any:
    return torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None


def _export_onnx(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool, opset: int | None,
                 dynamo: bool | None, meta: Mapping[str, Any], notes: list[str]) -> str:
    try:
        import onnx  # noqa: F401  (both exporters write through the onnx package)
    except ImportError as e:
        raise ExportError("ONNX export needs the 'onnx' and 'onnxscript' packages: "
                          "pip install 'visionzoo[export]'") from e
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > 1_800_000_000
    with torch.inference_mode():
        n_out = len(output_tensors(model(x)))
    output_names = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    exporter = ""
    errors = []
    if dynamo in (None, True):
        try:
            with _quiet_export():
                torch.onnx.export(
                    model, (x,), str(path), dynamo=True, external_data=big, opset_version=opset,
                    input_names=["input"], output_names=output_names, verbose=False,
                    dynamic_shapes=({0: _batch_dim(True)},) if dynamic_batch else None,
                )
            exporter = "torch.onnx.export (dynamo)"
        except Exception as e:  # noqa: BLE001 - reported below / fall back
            errors.append(f"dynamo exporter: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            if dynamo:
                raise ExportError(f"ONNX export failed: {errors[-1]}") from e
    if not exporter:
        try:
            with _quiet_export():
                torch.onnx.export(
                    model, (x,), str(path), dynamo=False, opset_version=opset or 17,
                    input_names=["input"], output_names=output_names, do_constant_folding=True,
                    dynamic_axes={n: {0: "batch"} for n in ["input", *output_names]} if dynamic_batch else None,
                )
            exporter = "torch.onnx.export (legacy TorchScript)"
            if errors:
                notes.append("fell back to the legacy exporter; " + errors[0])
        except Exception as e:  # noqa: BLE001
            errors.append(f"legacy exporter: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise ExportError("ONNX export failed: " + "; ".join(errors)) from e
    # attach preprocessing metadata
    proto = onnx.load(str(path), load_external_data=False)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"visionzoo.{k}", json.dumps(v)
    onnx.save(proto, str(path))
    return exporter


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: Path, jit_mode: str,
                        meta: Mapping[str, Any]) -> str:
    if jit_mode not in ("script", "trace"):
        raise ValueError(f"jit_mode must be 'script' or 'trace', got {jit_mode!r}")
    with _quiet_export():
        try:
            if jit_mode == "script":
                module = torch.jit.script(model)
            else:
                with torch.no_grad():
                    module = torch.jit.trace(model, (x,), check_trace=False)
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = " (try jit_mode='trace' / --trace)" if jit_mode == "script" else ""
            raise ExportError(f"torch.jit.{jit_mode} failed: {type(e).__name__}: {first}{hint}") from e
        torch.jit.save(module, str(path), _extra_files={"visionzoo.json": json.dumps(meta)})
    return f"torch.jit.{jit_mode}"


def _export_program(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool,
                    meta: Mapping[str, Any]) -> str:
    with _quiet_export():
        try:
            ep = torch.export.export(model, (x,), dynamic_shapes=({0: _batch_dim(True)},) if dynamic_batch else None)
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"torch.export failed: {type(e).__name__}: {first}") from e
        torch.export.save(ep, str(path), extra_files={"visionzoo.json": json.dumps(meta)})
    return "torch.export.export"


def load_exported(path: str | os.PathLike, fmt: str | None = None) -> Any:
    """Load an exported file as a callable: an onnxruntime session wrapper or a module."""
    path = Path(path)
    if fmt is None:
        fmt = next((f for f, s in FORMATS.items() if path.suffix == s), None)
        if fmt is None:
            raise ValueError(f"cannot tell the format of {path}; pass fmt")
    fmt = _normalize_format(fmt)
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ExportError("checking ONNX files needs onnxruntime: pip install 'visionzoo[export]'") from e
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return session
    with _quiet_export():
        if fmt == "torchscript":
            return torch.jit.load(str(path), map_location="cpu").eval()
        return torch.export.load(str(path)).module()


def run_exported(runner: Any, x: torch.Tensor) -> Any:
    """Run a :func:`load_exported` result on ``x``: a tensor, or a list of them for multi-output models."""
    if hasattr(runner, "get_inputs"):  # onnxruntime session
        outs = [torch.from_numpy(o) for o in runner.run(None, {runner.get_inputs()[0].name: x.detach().cpu().numpy()})]
        return outs[0] if len(outs) == 1 else outs
    with torch.inference_mode():
        out = runner(x)
    return out


def check_export(runner: Any, model: nn.Module, inputs: Sequence[torch.Tensor], atol: float,
                 rtol: float) -> tuple[float, float]:
    """Run the exported ``runner`` and eager ``model`` on each input; returns the largest max abs
    diff and the largest tolerance ``atol + rtol * max|eager|``. Raises
    :class:`ExportParityError` (without a result) when output shapes differ."""
    diff, tol = 0.0, 0.0
    for x in inputs:
        with torch.inference_mode():
            ref = model(x)
        got = run_exported(runner, x)
        got_shapes = [tuple(t.shape) for t in output_tensors(got)]
        ref_shapes = [tuple(t.shape) for t in output_tensors(ref)]
        if got_shapes != ref_shapes:
            raise ExportParityError(f"exported output shapes {got_shapes} != eager {ref_shapes} "
                                    f"for input {tuple(x.shape)}", None)  # type: ignore[arg-type]
        diff = max(diff, max_abs_diff(got, ref))
        tol = max(tol, atol + rtol * max_abs(ref))
    return diff, tol


def _resolve_model(model_or_name: nn.Module | str, fmt: str, img_size: int | Sequence[int] | None, pretrained: bool,
                   checkpoint: str | os.PathLike | None,
                   model_kwargs: Mapping[str, Any] | None) -> tuple[nn.Module, str | None]:
    """The model to export (eval mode) and its architecture name, if known."""
    if isinstance(model_or_name, str):
        model = create_export_model(model_or_name, fmt, img_size=img_size, pretrained=pretrained,
                                    checkpoint=checkpoint, model_kwargs=model_kwargs)
        return model, model_or_name
    if pretrained or checkpoint or model_kwargs:
        raise ValueError("pretrained/checkpoint/model_kwargs apply only when a model name is given")
    name = getattr(getattr(model_or_name, "pretrained_cfg", None), "architecture", None)
    return model_or_name.eval(), name


def _output_path(path: str | os.PathLike | None, name: str | None, fmt: str) -> Path:
    """``path`` (default ``<name>``) with the format's suffix unless it has a known one; parents made."""
    path = Path(path) if path is not None else Path(f"{(name or 'model').replace('/', '_').replace(':', '_')}")
    if path.suffix.lower() not in _KNOWN_SUFFIXES:  # 'resnet50.a1_in1k' -> 'resnet50.a1_in1k.onnx'
        path = path.with_name(path.name + FORMATS[fmt])
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _file_bytes(path: Path) -> int:
    """Size of the export, with its ``.data`` side file (large ONNX weights) if any."""
    size = path.stat().st_size
    data = path.with_name(path.name + ".data")
    if data.exists():
        size += data.stat().st_size
    return size


def _run_exporter(fmt: str, model: nn.Module, x: torch.Tensor, path: Path, *, dynamic_batch: bool,
                  opset: int | None, onnx_dynamo: bool | None, jit_mode: str, meta: dict[str, Any],
                  notes: list[str]) -> str:
    """Write ``path`` with the format's exporter; returns the exporter's name."""
    if fmt == "onnx":
        return _export_onnx(model, x, path, dynamic_batch, opset, onnx_dynamo, meta, notes)
    if fmt == "torchscript":
        return _export_torchscript(model, x, path, jit_mode, meta)
    return _export_program(model, x, path, dynamic_batch, meta)


def _check_batch_sizes(fmt: str, batch_size: int, trace_batch: int, dynamic_batch: bool, jit_mode: str) -> list[int]:
    """Batch sizes the parity check runs at: the asked one, another when the batch is symbolic, the traced one."""
    sizes = [batch_size]
    if dynamic_batch or (fmt == "torchscript" and jit_mode == "script"):
        sizes.append(batch_size + 2)
    if trace_batch not in sizes:
        sizes.append(trace_batch)
    return sizes


def _verify(result: ExportResult, model: nn.Module, name: str | None, sizes: list[int], hw: tuple[int, int],
            seed: int, atol: float, rtol: float, raise_on_mismatch: bool) -> ExportResult:
    """Load the file back, compare with eager at each batch size and fill in the verdict."""
    inputs = [example_input(model, hw, b, seed=seed + 1) for b in sizes]
    runner = load_exported(result.path, result.fmt)
    try:
        diff, tol = check_export(runner, model, inputs, atol, rtol)
    except ExportParityError as e:
        result.passed = False
        e.result = result
        raise
    result.max_abs_diff, result.tolerance, result.passed = diff, tol, diff <= tol
    result.checked_batch_sizes = sizes
    if not result.passed and raise_on_mismatch:
        raise ExportParityError(f"{result.fmt} export of {name or type(model).__name__} differs from eager: "
                                f"max abs diff {diff:.3g} > tolerance {tol:.3g}", result)
    return result


def export_model(
    model_or_name: nn.Module | str,
    fmt: str,
    path: str | os.PathLike | None = None,
    *,
    img_size: int | Sequence[int] | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    check: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    raise_on_mismatch: bool = True,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    opset: int | None = None,
    onnx_dynamo: bool | None = None,
    jit_mode: str = "script",
    seed: int = 0,
) -> ExportResult:
    """Export ``model_or_name`` to ``path`` in ``fmt`` and (by default) check it against eager.

    Args:
        model_or_name: an ``nn.Module`` (exported as is, in eval mode) or an architecture name
            (created with ``scriptable``/``exportable`` layer variants, see
            :func:`create_export_model`).
        fmt: ``'onnx'``, ``'torchscript'`` or ``'exported-program'``.
        path: output file; default ``<name><suffix>`` in the current directory.
        img_size: input height/width (int or (H, W)); default the model's cfg size.
        batch_size: batch size of the example input.
        dynamic_batch: make the batch dimension symbolic (ONNX / exported program; TorchScript
            scripts are always shape-generic).
        check: load the file back and compare with eager; ``raise_on_mismatch`` raises
            :class:`ExportParityError` when ``max abs diff > atol + rtol * max|eager|``.
        pretrained, checkpoint, model_kwargs: passed to ``create_model`` for names.
        opset: ONNX opset (default: the exporter's).
        onnx_dynamo: ``True`` dynamo exporter only, ``False`` legacy only, ``None`` dynamo with
            legacy fallback.
        jit_mode: ``'script'`` or ``'trace'`` for TorchScript.

    Returns:
        :class:`ExportResult` with the max abs diff, tolerance and verdict.

    Raises:
        ExportError: the exporter failed. ExportParityError: the check failed.
    """
    fmt = _normalize_format(fmt)
    model, name = _resolve_model(model_or_name, fmt, img_size, pretrained, checkpoint, model_kwargs)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = _output_path(path, name, fmt)
    c, h, w = resolve_input_size(model, img_size)
    # trace a batch of >= 2 for symbolic batches: torch.export specialises a size-1 dimension
    trace_batch = max(batch_size, 2) if dynamic_batch and fmt != "torchscript" else batch_size
    x = example_input(model, (h, w), trace_batch, seed=seed)
    meta = _metadata(model, name, (batch_size, c, h, w))
    notes: list[str] = []

    t0 = time.perf_counter()
    exporter = _run_exporter(fmt, model, x, path, dynamic_batch=dynamic_batch, opset=opset, onnx_dynamo=onnx_dynamo,
                             jit_mode=jit_mode, meta=meta, notes=notes)
    export_s = time.perf_counter() - t0
    result = ExportResult(fmt=fmt, path=path, input_shape=(batch_size, c, h, w), dynamic_batch=dynamic_batch,
                          exporter=exporter, export_s=export_s, file_bytes=_file_bytes(path), notes=notes)
    if not check:
        return result
    sizes = _check_batch_sizes(fmt, batch_size, trace_batch, dynamic_batch, jit_mode)
    return _verify(result, model, name, sizes, (h, w), seed, atol, rtol, raise_on_mismatch)
