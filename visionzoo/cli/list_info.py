"""``visionzoo list`` and ``visionzoo info``."""
from __future__ import annotations

import argparse
import json
import sys

from .completion import family_completer, model_completer, set_completer

# `list` and the parser never import torch: names and tags come from the registry's JSON files.


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    set_completer(p.add_argument("filter", nargs="*", default=[], help="wildcard patterns, e.g. 'resnet*' '*lite*'"),
                  model_completer())
    p.add_argument("--pretrained", action="store_true", help="only models with weights; lists arch.tag names")
    set_completer(p.add_argument("--module", default="", help="restrict to a family, e.g. resnet"), family_completer)
    set_completer(p.add_argument("--exclude", nargs="*", default=[], help="patterns to exclude"), model_completer())
    p.add_argument("--license", nargs="+", default=None, metavar="LICENSE",
                   help="only pretrained tags under these licences (wildcards: 'cc-by-*'; 'unknown' = none recorded)")
    p.add_argument("--json", action="store_true", help="print the names as one JSON array of strings")


def run_list(args: argparse.Namespace) -> int:
    from ..registry import list_models, list_pretrained

    if args.license:
        args.pretrained = True
        names = list_pretrained(args.filter, exclude_filters=args.exclude, license=args.license)
        if args.module:
            keep = set(list_models(module=args.module))
            names = [n for n in names if n.split(".", 1)[0] in keep]
    else:
        names = list_models(args.filter, module=args.module, pretrained=args.pretrained, exclude_filters=args.exclude)
    if args.json:
        print(json.dumps(names))
        return 0
    if names:
        print("\n".join(names))
    # the count goes to stderr: stdout is one name per line, so `visionzoo list | wc -l` counts models
    print(f"# {len(names)} {'pretrained tags' if args.pretrained else 'architectures'}", file=sys.stderr)
    return 0


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    set_completer(p.add_argument("model", help="architecture, arch.tag or local-dir:PATH"), model_completer())
    p.add_argument("--json", action="store_true", help="machine-readable output")


def model_info(name: str) -> dict:
    """Structure facts of a model, computed on the meta device (no weights are allocated)."""
    import torch

    from ..factory import create_model
    from ..registry import get_arch_pretrained_cfgs, get_model_module, split_model_name_tag

    with torch.device("meta"):
        model = create_model(name)
    cfg = model.pretrained_cfg
    arch = split_model_name_tag(name)[0]
    if ":" in name:  # local-dir: / hf-hub: -> the architecture it holds
        arch = cfg.architecture
    cfgs = get_arch_pretrained_cfgs(arch)
    top1 = _published_top1(arch)
    return {
        "name": name,
        "family": get_model_module(arch),
        "params": sum(p.numel() for p in model.parameters()),
        "num_features": model.num_features,
        "num_classes": model.num_classes,
        "feature_info": [dict(f) for f in model.feature_info],
        "license": cfg.license or "unknown",
        "pretrained_cfg": {k: v for k, v in cfg.to_dict().items() if k != "extra"},
        "tags": {t: {"weights": c.hf_hub_id or c.url or c.file, "input_size": c.input_size, "license": c.license,
                     "imagenet_top1": top1.get(t)}
                 for t, c in cfgs.items()},
    }


def _published_top1(arch: str) -> dict[str, tuple[float, int]]:
    """tag -> (published ImageNet-1k top-1, evaluation size): the best size of each tag."""
    from ..bench.reference import load_accuracy

    out: dict[str, tuple[float, int]] = {}
    for row in load_accuracy():  # best first
        if row.arch == arch and row.tag not in out:
            out[row.tag] = (row.top1, row.img_size)
    return out


def run_info(args: argparse.Namespace) -> int:
    info = model_info(args.model)
    try:
        from ..bench.cache import cached_measurements  # optional: measured numbers when available

        info["measured"] = cached_measurements(info["name"])
    except Exception:
        pass
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}  (family {info['family']})")
    print(f"  params        {info['params'] / 1e6:.2f} M")
    print(f"  num_features  {info['num_features']}    num_classes {info['num_classes']}")
    print(f"  license       {info['license']}")
    print("  feature_info:")
    for i, f in enumerate(info["feature_info"]):
        print(f"    [{i}] {f['module']:<20} channels {f['num_chs']:<5} reduction {f['reduction']}")
    c = info["pretrained_cfg"]
    print(f"  default cfg   {c.get('tag')}: input {tuple(c.get('input_size', ()))}, crop_pct {c.get('crop_pct')}, "
          f"{c.get('interpolation')}, mean {tuple(c.get('mean', ()))}, std {tuple(c.get('std', ()))}")
    print(f"  tags ({len(info['tags'])}; top-1 = published ImageNet-1k accuracy @ eval size; licence):")
    for t, d in info["tags"].items():
        acc = f"{d['imagenet_top1'][0]:.2f}@{d['imagenet_top1'][1]}" if d.get("imagenet_top1") else "-"
        print(f"    {t:<34} {str(tuple(d['input_size'] or ())):<16} {acc:<11} {d['license'] or 'unknown':<14} "
              f"{d['weights'] or '(no weights)'}")
    if info.get("measured"):
        print("  measured:")
        for k, v in info["measured"].items():
            print(f"    {k}: {v}")
    return 0
