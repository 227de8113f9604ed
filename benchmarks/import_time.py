"""``import visionzoo`` and ``create_model`` cold-start times, each in a fresh interpreter.

    python benchmarks/import_time.py [--repeats 7] [--models resnet50 ...] [--output FILE.md]

Measured (median over ``--repeats`` fresh processes):

* ``import torch`` alone: the floor every PyTorch program pays;
* ``import visionzoo``: the package is lazy, so this should not even import torch;
* ``import torch`` then ``from visionzoo import create_model, list_models``: the overhead over
  torch is what visionzoo itself costs to get ready (target <= 0.15 s);
* ``python -X importtime``: self time of every ``visionzoo.*`` module loaded by that import;
* ``list_models()`` on a cold process (reads the JSON cfg index; no model code);
* per model: first ``create_model`` in a process (imports the family module, builds, random
  init) and a second one (build + init only).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

MODELS = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "vit_small_patch16_224", "convnext_tiny",
          "regnety_016"]

_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
mods0 = set(sys.modules)
import visionzoo
from visionzoo import create_model, list_models
t2 = time.perf_counter()
names = list_models()
t3 = time.perf_counter()
out = {"torch": t1 - t0, "visionzoo_ready": t2 - t1, "list_models": t3 - t2, "n_models": len(names),
       "vz_modules": sorted(m for m in set(sys.modules) - mods0 if m.startswith("visionzoo"))}
model = sys.argv[1] if len(sys.argv) > 1 else ""
if model:
    torch.manual_seed(0)
    a = time.perf_counter(); create_model(model); b = time.perf_counter(); create_model(model); c = time.perf_counter()
    m0 = time.perf_counter(); torch.empty(2, device="meta") + 1; m1 = time.perf_counter()  # torch's meta kernels
    with torch.device("meta"):
        d = time.perf_counter(); create_model(model); e = time.perf_counter()
    out.update(create_first=b - a, create_second=c - b, create_meta=e - d, torch_meta_init=m1 - m0)
print("JSON" + json.dumps(out))
"""

_LAZY = r"""
import json, sys, time
t0 = time.perf_counter()
import visionzoo
t1 = time.perf_counter()
print("JSON" + json.dumps({"import_visionzoo": t1 - t0, "torch_imported": "torch" in sys.modules}))
"""


def _run(code: str, *args: str, extra: tuple[str, ...] = ()) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, *extra, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=True)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("JSON"))
    return json.loads(line[4:]), proc.stderr


def _importtime_self(stderr: str) -> dict[str, float]:
    """Self time (s) of each visionzoo module from ``-X importtime`` output."""
    out = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:"):].split("|")
        try:
            self_us = int(parts[0])
        except ValueError:
            continue
        name = parts[2].strip()
        if name.startswith("visionzoo"):
            out[name] = out.get(name, 0.0) + self_us / 1e6
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--models", nargs="*", default=MODELS)
    p.add_argument("--output", default=None, help="write a markdown report here")
    args = p.parse_args(argv)

    lazy = [_run(_LAZY)[0] for _ in range(args.repeats)]
    base = [_run(_PROBE)[0] for _ in range(args.repeats)]
    # module self times, from one -X importtime run per repeat
    self_times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        _, err = _run(_PROBE, extra=("-X", "importtime"))
        for k, v in _importtime_self(err).items():
            self_times.setdefault(k, []).append(v)
    per_model = {}
    for name in args.models:
        runs = [_run(_PROBE, name)[0] for _ in range(max(3, args.repeats // 2))]
        per_model[name] = {k: median([r[k] for r in runs])
                           for k in ("create_first", "create_second", "create_meta", "torch_meta_init")}

    torch_s = median([b["torch"] for b in base])
    ready_s = median([b["visionzoo_ready"] for b in base])
    lines = ["# Import and create_model time", ""]
    lines += [f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
              f"- python {platform.python_version()}, {os.cpu_count()} logical cores, "
              f"load average at end {' / '.join(f'{v:.1f}' for v in os.getloadavg())}",
              f"- command: python benchmarks/import_time.py {' '.join(argv if argv is not None else sys.argv[1:])}",
              f"- medians over {args.repeats} fresh interpreters", ""]
    lines += ["| step | seconds |", "|---|---|",
              f"| `import visionzoo` (lazy; torch imported: {lazy[0]['torch_imported']}) | "
              f"{median([x['import_visionzoo'] for x in lazy]):.4f} |",
              f"| `import torch` | {torch_s:.3f} |",
              f"| then `from visionzoo import create_model, list_models` (**overhead over torch**, target <= 0.15) | "
              f"**{ready_s:.3f}** |",
              f"| then `list_models()` ({base[0]['n_models']} names, cold) | {median([b['list_models'] for b in base]):.3f} |",
              ""]
    lines += [f"visionzoo modules loaded by that import: {len(base[0]['vz_modules'])}; "
              f"sum of their self times (`-X importtime`): "
              f"{sum(median(v) for v in self_times.values()):.3f} s. Largest:", ""]
    top = sorted(((median(v), k) for k, v in self_times.items()), reverse=True)[:8]
    lines += ["| module | self s |", "|---|---|"] + [f"| {k} | {v:.4f} |" for v, k in top] + [""]
    lines += ["`create_model` (random init, float32, CPU). First call includes importing the family module;",
              "`meta` builds on the meta device (no allocation or init), as `visionzoo info` does; torch's one-time",
              f"meta-kernel initialisation ({median([r['torch_meta_init'] for r in per_model.values()]):.2f} s) "
              "is excluded. Random init is dominated by `torch.nn.init.trunc_normal_` for ViTs.", "",
              "| model | first create s | second create s | meta device s |", "|---|---|---|---|"]
    for name, r in per_model.items():
        lines.append(f"| {name} | {r['create_first']:.3f} | {r['create_second']:.3f} | {r['create_meta']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
