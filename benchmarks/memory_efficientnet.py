"""Peak training memory of mobile-family models with and without each memory remedy (CPU).

    python benchmarks/memory_efficientnet.py                     # full run -> benchmarks/results/
    python benchmarks/memory_efficientnet.py --models efficientnet_b0 --batch-size 8 --steps 2

One training step is forward + cross-entropy + backward (no optimizer update) at ``--batch-size``
x 3 x ``--img-size``\\ :sup:`2`, in train mode. Configurations (see ``visionzoo/models/_mobile_memory.py``):

    plain        nothing
    inplace      memory_efficient="inplace": in-place residual adds / ReLUs where backward allows
    act          memory_efficient="act": fused BN + activation recomputed in backward
    block        memory_efficient="block" (= True): blocks keep only conv outputs
    ckpt         set_grad_checkpointing(): whole stages recomputed in backward
    block+ckpt   both

How memory is measured, and why this way:

* every configuration runs in a fresh subprocess, so nothing (allocator caches, thread pools, an
  earlier configuration's high-water mark) leaks between measurements;
* the subprocess pins glibc's mmap threshold (``MALLOC_MMAP_THRESHOLD_``) so every
  activation-sized tensor is its own mapping, returned to the OS the moment it is freed; resident
  memory then tracks live tensor memory instead of allocator fragmentation;
* after a warm-up step the process's peak-RSS counter is reset (``/proc/self/clear_refs``), one
  step is run, and the step's peak is ``VmHWM - VmRSS(before the step)``: what the step itself
  needs on top of the model, its gradients' previous storage and the input batch.

Step time is the process CPU time (user + system) of a step, the minimum over the timed steps of
``--rounds`` passes over the configurations (alternating order), with ``--threads`` intra-op
threads (default 1). On a shared machine wall-clock time mostly
measures the other tenants; with one thread the CPU time is the step's own work (wall times are
kept in the JSON too).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CONFIGS = ("plain", "inplace", "act", "block", "ckpt", "block+ckpt")
MODELS = ("efficientnet_b0", "efficientnet_b3", "mobilenetv3_large_100")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(model_name: str, config: str, batch: int, size: int, steps: int, threads: int) -> dict:
    """Measure one configuration in this (fresh) process."""
    import gc

    import torch
    import torch.nn.functional as F

    import visionzoo

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    parts = set(config.split("+"))
    level = next((p for p in parts if p in ("inplace", "act", "block")), False)
    model = visionzoo.create_model(model_name, memory_efficient=level)
    model.set_grad_checkpointing("ckpt" in parts)
    model.train()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))

    def step() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.process_time() - c0, time.perf_counter() - t0

    step()  # warm-up: first-touch allocations, thread pools
    cpu, wall, peaks = [], [], []
    for _ in range(steps):
        gc.collect()
        base = _status_kb("VmRSS")
        _reset_peak()
        c, w = step()
        peaks.append(_status_kb("VmHWM") - base)
        cpu.append(c)
        wall.append(w)
    return dict(model=model_name, config=config, batch=batch, img_size=size, threads=threads,
                peak_mb=max(peaks) / 1024, peak_mb_all=[p / 1024 for p in peaks],
                step_s=min(cpu), step_cpu_s_all=cpu, step_wall_s_all=wall,
                params_m=sum(p.numel() for p in model.parameters()) / 1e6)


def run_config(model_name: str, config: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0",
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--worker", model_name, config, "--batch-size", str(args.batch_size),
           "--img-size", str(args.img_size), "--steps", str(args.steps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{model_name} {config} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_markdown(rows: list[dict], meta: dict, path: Path) -> None:
    lines = [
        "# Training memory of EfficientNet / MobileNetV3: remedies compared (CPU)",
        "",
        f"Batch {meta['batch_size']}, {meta['img_size']}x{meta['img_size']}, forward + cross-entropy + backward, "
        f"train mode, {meta['threads']} thread(s), torch {meta['torch']}, {meta['machine']}. "
        "Peak = resident-memory high-water mark of one step above the resident memory before it, each "
        "configuration in a fresh process with a pinned mmap threshold "
        "(method: `benchmarks/memory_efficientnet.py` docstring). Time = CPU time of the fastest timed step; "
        f"load average {meta['load_before']} before, {meta['load_after']} after (shared machine: "
        "ratios are more reliable than absolute times).",
        "",
        "| model | config | peak MB | x plain | step CPU s | x plain |",
        "|---|---|---:|---:|---:|---:|",
    ]
    plain = {r["model"]: r for r in rows if r["config"] == "plain"}
    for r in rows:
        p = plain.get(r["model"])
        mem = f"{r['peak_mb'] / p['peak_mb']:.2f}" if p else "-"
        tim = f"{r['step_s'] / p['step_s']:.2f}" if p else "-"
        lines.append(f"| {r['model']} | {r['config']} | {r['peak_mb']:.0f} | {mem} | {r['step_s']:.2f} | {tim} |")
    lines += [
        "",
        "Configs: `inplace` = `memory_efficient=\"inplace\"`; `act` = `memory_efficient=\"act\"` (fused "
        "BN + activation, recomputed in backward); `block` = `memory_efficient=True` (blocks keep only "
        "conv outputs; norms, activations and SE recomputed, includes `act`); `ckpt` = "
        "`model.set_grad_checkpointing()`. Step time is CPU time (user + system) of one step, fastest of "
        "the timed steps.",
        "",
    ]
    b0 = {r["config"]: r for r in rows if r["model"] == "efficientnet_b0"}
    if "plain" in b0 and "block" in b0:
        mem = b0["block"]["peak_mb"] / b0["plain"]["peak_mb"]
        tim = b0["block"]["step_s"] / b0["plain"]["step_s"]
        ok = "met" if mem <= 0.6 and tim <= 1.3 else "NOT met"
        lines += [f"Target (efficientnet_b0: <= 0.6x plain peak at <= 1.3x step time): {ok} by "
                  f"`memory_efficient=True` ({mem:.2f}x memory, {tim:.2f}x time).", ""]
    lines += [
        "## Reading the numbers",
        "",
        "- `inplace` changes nothing measurable: with swish/hard-swish the activation's input must be kept, "
        "and where ReLU runs in place its output is kept by the next conv anyway; it only removes "
        "short-lived allocations.",
        "- `act` removes the stored BN output at every norm + activation: ~0.72x on EfficientNets at no "
        "measurable cost (the pre-activation is recomputed with one multiply-add in backward).",
        "- `block` keeps only convolution outputs inside each block: ~0.36x on EfficientNets for ~1.1x "
        "time. Recomputing element-wise work is cheap next to the convolutions, and the recompute "
        "reuses the batch statistics of the first pass.",
        "- `ckpt` (whole stages) recomputes the convolutions too: more time (1.35-1.5x) for less "
        "saving than `block` on EfficientNets; on MobileNetV3, whose late stages are narrow, it "
        "saves slightly more than `block`. Combining both gains little.",
        "",
        "Usage: `visionzoo.create_model(\"efficientnet_b0\", memory_efficient=True)` (or `\"act\"`, "
        "`\"inplace\"`); `model.set_grad_checkpointing()`. Memory-efficient activations on their own: "
        "`visionzoo.layers.activations_me` (`SwishMe`, `HardSwishMe`, `HardSigmoidMe`, `MishMe`, "
        "`batch_norm_act_me`).",
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "CONFIG"), help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="*", default=list(MODELS))
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up, per round")
    p.add_argument("--rounds", type=int, default=2,
                   help="passes over the configurations (alternating order); time = fastest step of all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "memory_efficientnet"), help="output stem (.json, .md)")
    args = p.parse_args(argv)

    if args.worker:
        res = worker(args.worker[0], args.worker[1], args.batch_size, args.img_size, args.steps, args.threads)
        print(json.dumps(res))
        return 0

    import torch

    meta = dict(batch_size=args.batch_size, img_size=args.img_size, threads=args.threads, steps=args.steps,
                torch=torch.__version__, machine=f"{platform.machine()} {os.cpu_count()} cpus",
                load_before=" ".join(f"{v:.1f}" for v in os.getloadavg()))
    rows = []
    for model_name in args.models:
        runs: dict[str, list[dict]] = {c: [] for c in args.configs}
        for rnd in range(args.rounds):
            # alternate the order so slow drifts in machine load do not favour one configuration
            for config in (args.configs if rnd % 2 == 0 else args.configs[::-1]):
                r = run_config(model_name, config, args)
                runs[config].append(r)
                print(f"{model_name:24s} {config:11s} round {rnd} peak {r['peak_mb']:8.0f} MB  "
                      f"step {r['step_s']:6.2f} s", flush=True)
        for config in args.configs:
            rs = runs[config]
            row = dict(rs[0])
            row.update(peak_mb=max(r["peak_mb"] for r in rs), peak_mb_all=[p for r in rs for p in r["peak_mb_all"]],
                       step_s=min(r["step_s"] for r in rs),
                       step_cpu_s_all=[t for r in rs for t in r["step_cpu_s_all"]],
                       step_wall_s_all=[t for r in rs for t in r["step_wall_s_all"]])
            rows.append(row)
    meta["load_after"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, results=rows), indent=1))
    write_markdown(rows, meta, out.with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
