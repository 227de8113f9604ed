"""``visionzoo embed DIR... --out emb.parquet``: embed an image collection, resumably, on one process or many."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .completion import model_completer, set_completer
from .errors import Interrupted
from .predict import DEFAULT_MODEL

__all__ = ["add_embed_arguments", "run_embed"]

DEFAULT_SHARD_SIZE = 1024  # visionzoo.embeddings.run.DEFAULT_SHARD_SIZE (repeated: the parser loads no torch)


def add_embed_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="DIR",
                   help="image folders (searched recursively) and/or image files")
    p.add_argument("--out", "-o", required=True, metavar="PATH",
                   help="output: FILE.parquet (path, embedding, model, tag) or FILE.npy (+ FILE.index.json)")
    set_completer(p.add_argument("--model", "-m", default=DEFAULT_MODEL,
                                 help=f"arch, arch.tag, local-dir:PATH or hf-hub:ORG/NAME (default {DEFAULT_MODEL})"),
                  model_completer())
    p.add_argument("--file-list", default=None, metavar="FILE",
                   help="text file with one image path per line (with or instead of DIR)")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each embedding")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", "-j", type=int, default=2, help="DataLoader worker processes per rank (default 2)")
    p.add_argument("--optimize", nargs="?", const="fp32", default=None, choices=("fp32", "onnxruntime", "int8"),
                   help="faster inference: fp32 (visionzoo.optimize: BN folding, channels-last, bf16 where native; "
                        "the default when given alone), onnxruntime (the float graph in ONNX Runtime) or int8 "
                        "(static int8 in ONNX Runtime, calibrated on --calibration)")
    p.add_argument("--calibration", default=None, metavar="DIR",
                   help="images to calibrate --optimize int8 on (default: the first 256 images of the list)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help=f"images per committed shard: the unit of resuming and of work per rank (default {DEFAULT_SHARD_SIZE})")
    p.add_argument("--checkpoint", default=None, help="local checkpoint instead of the tag's pretrained weights")
    p.add_argument("--no-pretrained", action="store_true", help="random (seeded) weights, for testing the pipeline")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available; rank i takes cuda:i)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output and discard an unfinished run's shards")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run_embed(args: argparse.Namespace) -> int:
    from ..embeddings.run import embed
    from ..embeddings.store import output_paths

    if not args.inputs and not args.file_list:
        raise ValueError("give image folders / files, or --file-list FILE")
    parts = output_paths(args.out).parts
    try:
        report = embed(args.inputs, args.out, model=args.model, file_list=args.file_list, normalize=args.normalize,
                       batch_size=args.batch_size, workers=args.workers, optimize=args.optimize,
                       calibration=args.calibration,
                       shard_size=args.shard_size, checkpoint=args.checkpoint, pretrained=not args.no_pretrained,
                       device=args.device, overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt:
        raise Interrupted(f"committed shards are kept in {parts}; run the same command again to resume") from None
    if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun rank 0 alone reports
        return 0
    for f in report["failed"]:
        what = f["error"] if f["error"].startswith(f["path"]) else f"{f['path']}: {f['error']}"
        print(f"visionzoo: warning: skipped {what}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
        return 0
    rate = f", {report['images_per_s']:.1f} images/s" if report["images_per_s"] else ""
    resumed = f" (resumed: {report['shards_done_before']} of {report['shards']} shards were done)" \
        if report["resumed"] else ""
    print(f"{report['embedded']} embeddings ({report['dim']} features, {report['model']}"
          f"{'.' + report['tag'] if report['tag'] else ''}) -> {report['output']}{resumed}")
    print(f"{len(report['failed'])} unreadable image(s) skipped; {report['images_this_run']} image(s) read by "
          f"{report['world_size']} process(es){rate}; report: {report['report']}")
    return 0
