"""ONNX Runtime as an inference backend: float32 graphs and int8 post-training quantization.

PyTorch's eager CPU path leaves two things on the table that a graph runtime takes: operator
fusion across module boundaries (LayerNorm, GELU, MatMul+bias, attention's small ops) and int8
kernels (VNNI ``vpdpbusd`` on AVX-512 CPUs). ONNX Runtime does both and is well kept, so this
module only glues it on:

* :func:`ort_session` exports a model to ONNX (batch axis dynamic) and opens a session with every
  graph optimisation on; the session is a callable ``tensor -> tensor``.
* :func:`quantize` calibrates activation ranges on the user's own images (a folder, a tensor or an
  iterable of batches), writes a static QDQ int8 model (per-channel int8 weights, uint8
  activations: the U8S8 layout the x86 VNNI kernels want) and reports how often its top-1 agrees
  with float32 on those images.

Both return an :class:`~visionzoo.deploy.inference.OptimizedModel`, so ``model(x)`` and
``model.report`` work as after :func:`~visionzoo.deploy.inference.optimize`.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn as nn

__all__ = ["OrtRunner", "ort_available", "ort_session", "quantize", "calibration_batches", "top1_agreement"]


def ort_available() -> tuple[bool, str]:
    """Whether ONNX Runtime and the ONNX exporter's packages import (and why not)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        return False, f"{e.name or e} is not installed (pip install 'visionzoo[export]')"
    return True, ""


class OrtRunner:
    """A callable over an ONNX Runtime session: float32 NCHW tensor in, tensor (or tuple) out.

    Holds the ``.onnx`` path so the exported graph can be kept (``keep_dir``) or inspected.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> Any:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        outs = [torch.from_numpy(o) for o in self.session.run(None, {self.input_name: arr})]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> str:
    from .export import _export_onnx, _metadata

    notes: list[str] = []
    meta = _metadata(model, getattr(model, "_visionzoo_name", None), tuple(example.shape))
    return _export_onnx(model, example, path, dynamic_batch=True, opset=None, dynamo=None, meta=meta, notes=notes)


def _work_dir(keep_dir: str | os.PathLike | None) -> Path:
    if keep_dir is not None:
        d = Path(keep_dir)
        d.mkdir(parents=True, exist_ok=True)
        return d
    # the session reads the file once; a private temporary folder is removed at exit
    tmp = tempfile.TemporaryDirectory(prefix="visionzoo-ort-")
    _TEMP_DIRS.append(tmp)
    return Path(tmp.name)


_TEMP_DIRS: list[tempfile.TemporaryDirectory] = []


def ort_session(model: nn.Module, example: torch.Tensor, *, threads: int | None = None,
                keep_dir: str | os.PathLike | None = None) -> tuple[OrtRunner, dict[str, Any]]:
    """Export ``model`` (eval mode, batch axis dynamic) and open an optimised ORT session."""
    ok, why = ort_available()
    if not ok:
        raise ImportError(f"the onnxruntime backend needs ONNX Runtime: {why}")
    t0 = time.perf_counter()
    path = _work_dir(keep_dir) / "model.onnx"
    exporter = _export(model.eval(), example, path)
    runner = OrtRunner(path, threads)
    return runner, {"backend": "onnxruntime", "exporter": exporter, "export_s": round(time.perf_counter() - t0, 2)}


# --- int8 ------------------------------------------------------------------------------------------

def calibration_batches(model: nn.Module, calibration: Any, batch_size: int = 8,
                        limit: int | None = 256) -> list[torch.Tensor]:
    """Calibration inputs as a list of float32 batches.

    ``calibration`` is a folder or image file(s) (read recursively and preprocessed with the model's
    eval transform), a tensor ``[N, C, H, W]``, or an iterable of tensors or ``(tensor, label)``
    pairs (a DataLoader). At most ``limit`` images are used.
    """
    if isinstance(calibration, (str, os.PathLike)) or (
            isinstance(calibration, (list, tuple)) and calibration and isinstance(calibration[0], (str, os.PathLike))):
        from ..data.config import resolve_model_data_config
        from ..data.images import find_images, load_image
        from ..data.transforms import create_transform

        paths = find_images([calibration] if isinstance(calibration, (str, os.PathLike)) else calibration)
        if not paths:
            raise ValueError(f"no images found for calibration in {calibration!r}")
        transform = create_transform(**resolve_model_data_config(model))
        images = torch.stack([transform(load_image(p)) for p in paths[:limit]])
        return list(images.split(batch_size))
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 4:
            raise ValueError(f"calibration tensor must be [N, C, H, W], got shape {tuple(calibration.shape)}")
        return list(calibration[:limit].float().split(batch_size))
    batches, seen = [], 0
    for item in calibration:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError("calibration batches must be [N, C, H, W] tensors (or (tensor, label) pairs)")
        batches.append(x.float())
        seen += x.shape[0]
        if limit is not None and seen >= limit:
            break
    if not batches:
        raise ValueError("calibration is empty")
    return batches


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of batches."""

    def __init__(self, input_name: str, batches: Sequence[torch.Tensor]) -> None:
        self.input_name, self.batches = input_name, batches
        self._it: Iterator[torch.Tensor] = iter(batches)

    def get_next(self) -> dict[str, Any] | None:
        x = next(self._it, None)
        return None if x is None else {self.input_name: x.contiguous().numpy()}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def top1_agreement(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    """Share of rows whose arg-max class is the same in ``a`` and ``b`` (lists of logits)."""
    same = total = 0
    for x, y in zip(a, b):
        same += int((x.argmax(-1) == y.argmax(-1)).sum())
        total += x.shape[0]
    return same / max(total, 1)


def quantize(model: nn.Module, calibration: Any, *, per_channel: bool = True, method: str = "minmax",
             threads: int | None = None, keep_dir: str | os.PathLike | None = None, batch_size: int = 8,
             limit: int | None = 256, verify: bool = True) -> Any:
    """Static int8 post-training quantization through ONNX Runtime (QDQ format).

    Args:
        model: a float model (any family that exports to ONNX).
        calibration: images to measure activation ranges on: a folder / image paths, a
            ``[N, C, H, W]`` tensor, or an iterable of batches (see :func:`calibration_batches`).
            Use images like the ones the model will see; a few dozen to a few hundred suffice.
        per_channel: one int8 scale per output channel of each weight (keeps accuracy on
            depthwise convs).
        method: activation range estimator: ``'minmax'``, ``'entropy'`` or ``'percentile'``.
        keep_dir: keep ``model.onnx`` (float) and ``model.int8.onnx`` there (else a temp folder).
        verify: report ``top1_agreement`` (and max logit difference) of int8 vs float32 on the
            calibration images in ``.report``.

    Returns:
        an ``OptimizedModel`` running the int8 graph; ``.report`` says what was done and measured.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .inference import OptimizedModel

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"method must be one of {', '.join(methods)}, got {method!r}")
    model.eval()
    batches = calibration_batches(model, calibration, batch_size=batch_size, limit=limit)
    t0 = time.perf_counter()
    work = _work_dir(keep_dir)
    fp32_path, pre_path, int8_path = work / "model.onnx", work / "model.pre.onnx", work / "model.int8.onnx"
    exporter = _export(model, batches[0][:1], fp32_path)
    try:  # shape inference + graph clean-up make more nodes quantizable; optional
        quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
        source = pre_path
    except Exception:  # noqa: BLE001 - quantize the exported graph as is
        source = fp32_path
    import onnx

    # the graph's first input (weights are initializers, not inputs); no session needed to read it
    input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
    quantize_static(str(source), str(int8_path), _Reader(input_name, batches), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                    calibrate_method=methods[method])
    runner = OrtRunner(int8_path, threads)
    report: dict[str, Any] = {"backend": "onnxruntime", "dtype": "int8", "exporter": exporter,
                              "calibration_images": sum(b.shape[0] for b in batches), "per_channel": per_channel,
                              "calibrate_method": method, "prepare_s": round(time.perf_counter() - t0, 2)}
    if verify:
        with torch.inference_mode():
            ref = [model(b) for b in batches]
        got = [runner(b) for b in batches]
        report["top1_agreement"] = round(top1_agreement(got, ref), 4)
        report["max_abs_diff"] = float(max((g - r).abs().max() for g, r in zip(got, ref)))
    if keep_dir is not None:
        report["onnx_path"] = str(int8_path)
    return OptimizedModel(model, runner, report=report)
