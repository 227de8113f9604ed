"""Fused ``F.scaled_dot_product_attention`` vs explicit ``softmax(q k^T) v`` attention on CPU.

Times the full forward of ViT models (random weights, eval, ``torch.inference_mode``) and of one
attention layer, with the two attention paths interleaved round by round so that load from other
processes affects both alike; reports medians and the largest output difference. Results go to
``benchmarks/results/attention_sdpa.md``.

    python benchmarks/attention_sdpa.py                       # vit_small + vit_base, batch 1 and 8
    python benchmarks/attention_sdpa.py --models vit_small_patch16_224 --batch-sizes 1 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import visionzoo
from visionzoo.layers.attention import Attention

HERE = Path(__file__).resolve().parent


def _set_fused(model: torch.nn.Module, fused: bool) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


def _time(fn, x: torch.Tensor, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return (time.perf_counter() - t0) / iters


def compare(model: torch.nn.Module, x: torch.Tensor, rounds: int, iters: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each path, over ``rounds`` interleaved rounds of ``iters`` calls."""
    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        outs = {}
        for fused in (True, False):
            _set_fused(model, fused)
            for _ in range(warmup):
                outs[fused] = model(x)
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for fused in order:
                _set_fused(model, fused)
                times[fused].append(_time(model, x, iters))
    _set_fused(model, True)
    diff = (outs[True] - outs[False]).abs().max().item() / max(outs[False].abs().max().item(), 1e-12)
    return {"sdpa": statistics.median(times[True]), "explicit": statistics.median(times[False]), "rel_diff": diff}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--results", default=str(HERE / "results" / "attention_sdpa.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    for name in args.models:
        model = visionzoo.create_model(name).eval()
        dim, heads = model.embed_dim, model.blocks[0].attn.num_heads
        tokens = model.patch_embed.num_patches + model.num_prefix_tokens
        attn = Attention(dim, heads, qkv_bias=True).eval()
        for bs in args.batch_sizes:
            img = torch.randn(bs, 3, *model.patch_embed.img_size)
            seq = torch.randn(bs, tokens, dim)
            for what, mod, x in (("model", model, img), ("attention layer", attn, seq)):
                r = compare(mod, x, args.rounds, args.iters if what == "model" else args.iters * 10, args.warmup)
                rows.append((name, what, bs, r))
                print(f"{name:24s} {what:15s} bs={bs:2d} sdpa {r['sdpa'] * 1e3:8.2f} ms  explicit "
                      f"{r['explicit'] * 1e3:8.2f} ms  speedup {r['explicit'] / r['sdpa']:.2f}x  "
                      f"rel diff {r['rel_diff']:.1e}", flush=True)

    cmd = "python benchmarks/attention_sdpa.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# SDPA vs explicit attention (CPU)",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} logical CPUs (shared), "
        f"torch {torch.__version__}, {args.threads} thread(s), float32, `torch.inference_mode`, random weights. "
        f"Median over {args.rounds} interleaved rounds; 'attention layer' is one `Attention` module on the "
        f"model's token sequence (width, heads and length of the model).",
        "",
        "On a shared machine other jobs add noise to absolute times; the interleaving keeps the "
        "SDPA/explicit ratio within a row comparable.",
        "",
        "| model | what | batch | SDPA ms | explicit ms | explicit / SDPA | max rel diff |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, what, bs, r in rows:
        lines.append(f"| {name} | {what} | {bs} | {r['sdpa'] * 1e3:.2f} | {r['explicit'] * 1e3:.2f} | "
                     f"{r['explicit'] / r['sdpa']:.2f} | {r['rel_diff']:.1e} |")
    lines.append("")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
