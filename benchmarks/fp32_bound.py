"""How much faster *can* a float32 forward get on this CPU? An upper bound from the model's own GEMMs.

    python benchmarks/fp32_bound.py --output benchmarks/results/fp32_bound.md

For each model and batch size this records every matrix-multiply-class call of one eager forward
(``F.linear``, ``F.conv2d``, ``F.scaled_dot_product_attention``, ``torch.matmul``/``@``) with its
exact operand shapes, then times each call *in isolation* with the fastest float32 kernel we can
reach (best of: PyTorch's default, weights pre-packed for MKL, channels-last for convolutions,
explicit-math attention, and a one-node ONNX Runtime graph for linears). The sum is the time the
forward would take if everything else (norms, activations, adds, copies, layout changes) were free
and every GEMM ran at its best isolated speed, so ``eager / sum`` bounds the speed-up of *any*
float32 execution that does the same arithmetic (graph compilers, fusion, other runtimes).
Isolated calls run with warm caches, so the bound is optimistic: the true ceiling is lower.

Reduced-precision paths (bf16, int8) are outside the bound: they do different arithmetic.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_speed import cpu_name, load_avg  # noqa: E402

REPS = ["resnet50", "efficientnet_b0", "mobilenetv3_large_100", "vit_small_patch16_224", "convnext_tiny",
        "regnety_016"]
_LINEAR, _CONV, _SDPA, _MATMUL = "linear", "conv2d", "sdpa", "matmul"


class _Recorder(TorchFunctionMode):
    """Records the GEMM-class calls of one forward: (kind, tensors, kwargs)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = {F.linear: _LINEAR, F.conv2d: _CONV, F.scaled_dot_product_attention: _SDPA,
                torch.matmul: _MATMUL, torch.Tensor.__matmul__: _MATMUL, torch.bmm: _MATMUL}.get(func)
        if kind is not None:
            self.calls.append((kind, tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args),
                               {k: v for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def best_time(fn: Callable[[], Any], seconds: float) -> float:
    """Best single-call time in seconds over a window of at least ``seconds`` (and 5 calls)."""
    fn()
    best, t_end, n = float("inf"), time.perf_counter() + seconds, 0
    while n < 5 or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def _ort_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> Callable[[], Any] | None:
    """A one-node (MatMul [+ Add]) ONNX Runtime session for ``x @ w.T + b``; None without ORT."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    x2 = x.reshape(-1, x.shape[-1]).numpy()
    inits = [numpy_helper.from_array(w.t().contiguous().numpy(), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if b is None else "m"])]
    if b is not None:
        inits.append(numpy_helper.from_array(b.numpy(), "b"))
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x2.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x2.shape[0], w.shape[0]])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.ascontiguousarray(x2)}
    return lambda: sess.run(None, feed)


def candidates(kind: str, args: tuple, kwargs: dict) -> dict[str, Callable[[], Any]]:
    """Every float32 way we know to compute one recorded call."""
    out: dict[str, Callable[[], Any]] = {}
    if kind == _LINEAR:
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        out["torch"] = lambda: F.linear(x, w, b)
        rows = x.numel() // x.shape[-1]
        try:
            packed = torch.ops.mkl._mkl_reorder_linear_weight(w, rows)
            x2 = x.reshape(rows, x.shape[-1])
            torch.ops.mkl._mkl_linear(x2, packed, w, b, rows)
            out["mkl packed"] = lambda: torch.ops.mkl._mkl_linear(x2, packed, w, b, rows)
        except (AttributeError, RuntimeError):
            pass
        ort_fn = _ort_linear(x, w, b)
        if ort_fn is not None:
            out["onnxruntime"] = ort_fn
    elif kind == _CONV:
        out["torch"] = lambda: F.conv2d(*args, **kwargs)
        x, w = args[0], args[1]
        xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        rest = args[2:]
        out["channels-last"] = lambda: F.conv2d(xc, wc, *rest, **kwargs)
    elif kind == _SDPA:
        out["torch"] = lambda: F.scaled_dot_product_attention(*args, **kwargs)
        q, k, v = args[:3]
        if len(args) == 3 and not kwargs.get("attn_mask") is not None and not kwargs.get("is_causal"):
            scale = kwargs.get("scale") or q.shape[-1] ** -0.5
            out["math"] = lambda: ((q * scale) @ k.transpose(-1, -2)).softmax(-1) @ v
    else:
        out["torch"] = lambda: torch.matmul(args[0], args[1])
    return out


def bound(name: str, batch_size: int, seconds: float, rounds: int) -> dict[str, Any]:
    """``rounds`` alternations of (eager forward, GEMM-class sum); the bound is the median of the
    per-round ratios, so a slow phase of a shared machine hits both sides of one ratio alike."""
    import visionzoo

    torch.manual_seed(0)
    model = visionzoo.create_model(name).eval()
    cfg = visionzoo.get_pretrained_cfg(name)
    size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    x = torch.randn(batch_size, *size)
    with torch.inference_mode():
        rec = _Recorder()
        with rec:
            model(x)
        keys = [(kind, tuple((tuple(a.shape), a.stride()) if isinstance(a, torch.Tensor) else a for a in args),
                 tuple(sorted((k, str(v)) for k, v in kwargs.items()))) for kind, args, kwargs in rec.calls]
        unique = {key: call for key, call in zip(keys, rec.calls)}
        # the fastest kernel per distinct call, chosen once
        chosen: dict[tuple, tuple[str, Callable[[], Any]]] = {}
        for key, (kind, args, kwargs) in unique.items():
            cands = candidates(kind, args, kwargs)
            times = {label: best_time(fn, seconds / 20) for label, fn in cands.items()}
            label = min(times, key=times.get)
            chosen[key] = (label, cands[label])
        eagers, sums, ratios = [], [], []
        per_kind: dict[str, float] = {}
        for _ in range(rounds):
            eager = best_time(lambda: model(x), seconds)
            op_time = {key: best_time(fn, seconds / 20) for key, (_, fn) in chosen.items()}
            total = sum(op_time[key] for key in keys)
            eagers.append(eager)
            sums.append(total)
            ratios.append(eager / total)
            if total <= min(sums):
                per_kind = {}
                for key in keys:
                    per_kind[key[0]] = per_kind.get(key[0], 0.0) + op_time[key]
    winners: dict[str, int] = {}
    for key in keys:
        winners[chosen[key][0]] = winners.get(chosen[key][0], 0) + 1
    ratios_sorted = sorted(ratios)
    return {"model": name, "batch_size": batch_size, "eager_ms": min(eagers) * 1e3, "gemm_ms": min(sums) * 1e3,
            "bound": ratios_sorted[len(ratios) // 2], "round_bounds": ratios,
            "round_eager_ms": [e * 1e3 for e in eagers], "round_gemm_ms": [t * 1e3 for t in sums],
            "per_kind_ms": {k: v * 1e3 for k, v in per_kind.items()},
            "calls": len(rec.calls), "fastest_kernel_counts": winners}


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Upper bound on float32 speed-ups (CPU)", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", "`eager`: the eager forward (best call); `GEMM-class sum`: every linear / conv / attention /",
              "matmul call of that forward timed alone with the fastest float32 kernel found; `bound` = eager / sum,",
              "the median over rounds that alternate the two (each round's ratio in the next column): no float32",
              "execution of the same arithmetic can be faster than that (the true ceiling is lower).", "",
              "| model | batch | eager ms (best) | GEMM-class sum ms (best) | bound (median) | rounds | by kind (ms) "
              "| fastest kernel (calls) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in r["per_kind_ms"].items())
        wins = ", ".join(f"{k} {v}" for k, v in sorted(r["fastest_kernel_counts"].items()))
        rounds = " / ".join(f"{b:.2f}" for b in r["round_bounds"])
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['eager_ms']:.1f} | {r['gemm_ms']:.1f} | "
                     f"**{r['bound']:.2f}x** | {rounds} | {kinds} | {wins} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=REPS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0, help="timing window for the eager forward")
    p.add_argument("--rounds", type=int, default=5, help="alternations of eager and GEMM-class timing")
    p.add_argument("--output", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "cpu": f"{cpu_name()}, {os.cpu_count()} logical cores",
            "torch": f"{torch.__version__}, {torch.get_num_threads()} threads", "python": platform.python_version(),
            "command": "python benchmarks/fp32_bound.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "load average at start (1/5/15 min)": load_avg()}
    if args.note:
        meta["note"] = args.note
    rows = []
    for name in args.models:
        for bs in args.batch_sizes:
            r = bound(name, bs, args.seconds, args.rounds)
            rows.append(r)
            print(f"{name:24s} bs{bs:<3d} eager {r['eager_ms']:7.1f} ms  GEMM-class {r['gemm_ms']:7.1f} ms  "
                  f"bound {r['bound']:.2f}x  rounds {[round(b, 2) for b in r['round_bounds']]}", flush=True)
    meta["load average at end"] = load_avg()
    text = markdown(rows, meta)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
