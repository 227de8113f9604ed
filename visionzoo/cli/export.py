"""``visionzoo export NAME --format onnx|torchscript|exported-program``: export with a parity check."""
from __future__ import annotations

import argparse
import json

from .completion import model_completer, set_completer

# The exporter's formats and default tolerances, repeated here so that building the parser does not
# import torch (tests/test_cli_unix.py checks they equal visionzoo.export's).
FORMATS = ("onnx", "torchscript", "exported-program")
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


def _img_size(text: str) -> int | tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        sizes = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--img-size must be N or HxW, got {text!r}") from None
    if len(sizes) == 1 and sizes[0] > 0:
        return sizes[0]
    if len(sizes) == 2 and min(sizes) > 0:
        return sizes[0], sizes[1]
    raise argparse.ArgumentTypeError(f"--img-size must be N or HxW, got {text!r}")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    set_completer(p.add_argument("model", help="architecture or arch.tag, e.g. resnet50 or resnet50.a1_in1k"),
                  model_completer())
    p.add_argument("--format", "-f", dest="fmt", default="onnx", choices=list(FORMATS),
                   help="output format (default onnx)")
    p.add_argument("--output", "-o", default=None,
                   help="output file (default <model>.onnx / .pt / .pt2 in the current directory)")
    p.add_argument("--img-size", type=_img_size, default=None, metavar="N|HxW",
                   help="input size (default the model's); fixed-size models (ViT, Swin) are built for it")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the example input")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (ONNX, exported-program)")
    p.add_argument("--checkpoint", default=None, help="local checkpoint to load into the model")
    p.add_argument("--pretrained", action="store_true", help="load the tag's pretrained weights")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (0 = no classifier)")
    p.add_argument("--in-chans", type=int, default=None, help="input channels")
    p.add_argument("--features-only", action="store_true", help="export the feature-map backbone (one output per level)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--onnx-exporter", choices=("auto", "dynamo", "legacy"), default="auto",
                   help="torch.onnx exporter: dynamo (torch.export based), legacy (TorchScript based) or "
                        "auto = dynamo with legacy fallback")
    p.add_argument("--trace", action="store_true", help="TorchScript via torch.jit.trace instead of script")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against the eager model")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"parity tolerance, absolute (default {DEFAULT_ATOL})")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                   help=f"parity tolerance relative to max |eager output| (default {DEFAULT_RTOL})")
    p.add_argument("--int8", action="store_true",
                   help="ONNX with static int8 quantization (ONNX Runtime QDQ), calibrated on --calibration")
    p.add_argument("--calibration", default=None, metavar="DIR", help="images to calibrate --int8 on (required with it)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run_export(args: argparse.Namespace) -> int:
    from ..export import ExportError, ExportParityError, export_model

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.pretrained and args.checkpoint:
        raise ValueError("use either --pretrained or --checkpoint, not both")
    model_kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v is not None}
    if args.features_only:
        model_kwargs["features_only"] = True
    if args.int8:
        return _export_int8(args, model_kwargs)
    dynamo = {"auto": None, "dynamo": True, "legacy": False}[args.onnx_exporter]
    try:
        result = export_model(
            args.model, args.fmt, args.output, img_size=args.img_size, batch_size=args.batch_size,
            dynamic_batch=args.dynamic_batch, check=not args.no_check, atol=args.atol, rtol=args.rtol,
            raise_on_mismatch=False, pretrained=args.pretrained, checkpoint=args.checkpoint,
            model_kwargs=model_kwargs, opset=args.opset, onnx_dynamo=dynamo,
            jit_mode="trace" if args.trace else "script",
        )
    except ExportParityError as e:  # shape mismatch
        raise ExportError(f"parity check failed: {e}") from e
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        for note in result.notes:
            print(f"  note: {note}")
    if result.passed is False:  # main prints this as the one error line, exit code 1
        raise ExportError(f"parity check failed (max abs diff {result.max_abs_diff:.3g} > {result.tolerance:.3g}); "
                          f"the file was kept at {result.path}")
    return 0


def _export_int8(args: argparse.Namespace, model_kwargs: dict) -> int:
    """ONNX Runtime static int8: calibrate, quantize, report top-1 agreement with float32."""
    import shutil
    import tempfile
    from pathlib import Path

    from ..deploy.onnxrt import quantize
    from ..factory import create_model

    if args.fmt != "onnx":
        raise ValueError("--int8 writes ONNX; use --format onnx")
    if not args.calibration:
        raise ValueError("--int8 needs --calibration DIR (images like the ones the model will see)")
    model = create_model(args.model, pretrained=args.pretrained, checkpoint_path=args.checkpoint, **model_kwargs)
    out = Path(args.output or f"{args.model.replace('/', '_')}.int8.onnx")
    with tempfile.TemporaryDirectory(prefix="visionzoo-int8-") as tmp:
        q = quantize(model.eval(), args.calibration, keep_dir=tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")  # never a half-written file at the destination
        shutil.copyfile(q.report["onnx_path"], part)
        part.replace(out)
    report = {k: v for k, v in q.report.items() if k != "onnx_path"} | {"path": str(out), "bytes": out.stat().st_size}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{out}: int8 ONNX ({report['bytes'] / 1e6:.1f} MB), top-1 agrees with float32 on "
              f"{report['top1_agreement']:.1%} of {report['calibration_images']} calibration images "
              f"(max logit diff {report['max_abs_diff']:.3g})")
    return 0


# the dispatcher looks for add_arguments / run too
add_arguments = add_export_arguments
run = run_export
