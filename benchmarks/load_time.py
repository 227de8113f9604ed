"""Time ``create_model(name, pretrained=True)`` from a local safetensors file, in fresh processes.

Each measurement runs in its own Python process (imports excluded from the timing, first-call
costs included: that is what a user script pays). Three ways to get the same loaded model:

* ``ours``      - ``create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...))``
* ``before``    - the same with the pre-fix build path (weight init run on meta tensors and
                  ``Module.to_empty``), reproduced by monkeypatching ``visionzoo.builder``
* ``baseline``  - plain construction with random init + ``safetensors.torch.load_file`` +
                  ``load_state_dict`` (what loading costs without a meta-device build)

The ratio ``ours / baseline`` is comparable across machines and load conditions; wall times are
not (the table records the load average).

    python benchmarks/load_time.py [--reps 3] [--models resnet50 vit_base_patch16_224 efficientnet_b0]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import contextlib, json, sys, time
mode, arch, path = sys.argv[1:4]
import torch
import visionzoo
from visionzoo import builder
if mode == "before":
    builder.skip_init_on_meta = contextlib.nullcontext
    builder.materialize_empty = lambda m, device: m.to_empty(device=device)
w0, c0 = time.perf_counter(), time.process_time()
if mode == "baseline":
    from safetensors.torch import load_file
    m = visionzoo.create_model(arch)
    m.load_state_dict(load_file(path))
else:
    m = visionzoo.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=path))
w1, c1 = time.perf_counter(), time.process_time()
assert not any(p.is_meta for p in m.parameters())
print(json.dumps({"wall": w1 - w0, "cpu": c1 - c0}))
"""


def _run(mode: str, arch: str, path: Path) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out = subprocess.run([sys.executable, "-c", CHILD, mode, arch, str(path)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "vit_base_patch16_224", "efficientnet_b0"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--modes", nargs="+", default=["before", "ours", "baseline"])
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    import visionzoo

    tmp = Path(tempfile.mkdtemp(prefix="vz_load_time_"))
    rows = []
    for arch in args.models:
        path = tmp / f"{arch}.safetensors"
        with torch.no_grad():
            sd = {k: v.contiguous() for k, v in visionzoo.create_model(arch).state_dict().items()}
        save_file(sd, str(path))
        times: dict[str, list[dict[str, float]]] = {m: [] for m in args.modes}
        for _ in range(args.reps):  # interleaved, so load drifts hit every mode alike
            for mode in args.modes:
                times[mode].append(_run(mode, arch, path))
        med = {m: {k: statistics.median(t[k] for t in ts) for k in ("wall", "cpu")} for m, ts in times.items()}
        rows.append((arch, med))
        print(arch, json.dumps(med), flush=True)
        path.unlink()
    print(f"\nload average: {os.getloadavg()}, cpus: {os.cpu_count()}, reps: {args.reps} (medians)\n")
    print("| model | mode | wall s | cpu s | wall / baseline | cpu / baseline |")
    print("|---|---|---:|---:|---:|---:|")
    for arch, med in rows:
        base = med.get("baseline")
        for mode, t in med.items():
            rw = f"{t['wall'] / base['wall']:.2f}" if base else "-"
            rc = f"{t['cpu'] / base['cpu']:.2f}" if base else "-"
            print(f"| {arch} | {mode} | {t['wall']:.2f} | {t['cpu']:.2f} | {rw} | {rc} |")


if __name__ == "__main__":
    main()
