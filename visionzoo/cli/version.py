"""``visionzoo version``: versions, platform, the CPU features ``optimize`` uses and the accelerator.

Paste its output into a bug report. ``visionzoo --version`` prints only visionzoo's version (no torch).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any

__all__ = ["add_version_arguments", "run_version", "version_info"]

# optional packages worth naming in a bug report (versions read from metadata, nothing imported)
_OPTIONAL = ("numpy", "Pillow", "safetensors", "huggingface_hub", "onnx", "onnxruntime", "argcomplete")


def add_version_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_features() -> dict[str, Any]:
    """What torch's CPU kernels dispatch to, the instruction sets, and optimize()'s bfloat16 choice."""
    import torch

    feats: dict[str, Any] = {}
    try:
        feats["capability"] = torch.backends.cpu.get_cpu_capability()  # the ATen kernel level: AVX2, AVX512, ...
    except (AttributeError, RuntimeError):
        feats["capability"] = None
    checks = {"avx2": "_is_avx2_supported", "avx512": "_is_avx512_supported", "vnni": "_is_vnni_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "amx_tile": "_is_amx_tile_supported",
              "amx_fp16": "_is_amx_fp16_supported"}
    for key, fn in checks.items():
        f = getattr(torch.cpu, fn, None)
        try:
            feats[key] = bool(f()) if f is not None else None
        except RuntimeError:
            feats[key] = None
    feats["mkldnn"] = bool(torch.backends.mkldnn.is_available())
    try:  # the decision visionzoo.optimize makes: bfloat16 only with bf16 arithmetic in hardware
        from ..inference import bf16_supported

        feats["optimize_bf16"] = bool(bf16_supported())
    except Exception:  # noqa: BLE001 - a report must not fail on one probe
        feats["optimize_bf16"] = None
    return feats


def _accelerator() -> dict[str, Any] | None:
    import torch

    if torch.cuda.is_available():
        devices = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                            "memory_gib": round(p.total_memory / 2 ** 30, 1)})
        backend = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        return {"type": backend, "runtime": torch.version.hip if backend == "rocm" else torch.version.cuda,
                "devices": devices}
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return {"type": "mps", "devices": [{"name": "Apple GPU"}]}
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return {"type": "xpu", "devices": [{"name": xpu.get_device_name(i)} for i in range(xpu.device_count())]}
    return None


def version_info() -> dict[str, Any]:
    """Everything ``visionzoo version`` reports, as a dict (the ``--json`` schema)."""
    import torch

    from .. import __version__

    return {
        "visionzoo": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": {"model": _cpu_model(), "count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                **_cpu_features()},
        "accelerator": _accelerator(),
        "packages": {name: _dist_version(name) for name in _OPTIONAL},
    }


def _yes(v: Any) -> str:
    return "?" if v is None else ("yes" if v else "no")


def run_version(args: argparse.Namespace) -> int:
    info = version_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cpu = info["cpu"]
    lines = [
        f"visionzoo    {info['visionzoo']}",
        f"torch        {info['torch']}",
        f"python       {info['python']} ({info['python_implementation']})",
        f"platform     {info['platform']}",
        f"cpu          {cpu['model']}; {cpu['count']} logical cores, torch uses {cpu['torch_threads']} threads",
        f"cpu kernels  {cpu['capability'] or '?'}  (AVX2 {_yes(cpu['avx2'])}, AVX-512 {_yes(cpu['avx512'])}, "
        f"VNNI {_yes(cpu['vnni'])}, AVX512-BF16 {_yes(cpu['avx512_bf16'])}, AMX {_yes(cpu['amx_tile'])}, "
        f"AMX-FP16 {_yes(cpu['amx_fp16'])}, oneDNN {_yes(cpu['mkldnn'])})",
        f"optimize     bfloat16 {'on (hardware bf16)' if cpu['optimize_bf16'] else 'off (no hardware bf16)'}"
        if cpu["optimize_bf16"] is not None else "optimize     bfloat16 ?",
    ]
    acc = info["accelerator"]
    if acc is None:
        lines.append("accelerator  none")
    else:
        for i, d in enumerate(acc["devices"]):
            extra = ", ".join(f"{k} {v}" for k, v in d.items() if k != "name")
            lines.append(f"accelerator  {acc['type']}:{i} {d['name']}" + (f" ({extra})" if extra else "")
                         + (f"; {acc['type']} {acc['runtime']}" if acc.get("runtime") else ""))
    pkgs = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    lines.append(f"packages     {pkgs}")
    print("\n".join(lines))
    return 0


add_arguments = add_version_arguments
run = run_version
