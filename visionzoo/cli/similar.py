"""``visionzoo similar EMB QUERY... --topk 5`` / ``--dedup THRESHOLD``: search an embedding file with faiss."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .completion import model_completer, set_completer

__all__ = ["add_similar_arguments", "run_similar"]

INDEX_KINDS = ("auto", "exact", "hnsw")  # visionzoo.embeddings.similarity.INDEX_KINDS (the parser loads no faiss)
EXACT_MAX = 20_000  # visionzoo.embeddings.similarity.EXACT_MAX


def add_similar_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("embeddings", metavar="EMBEDDINGS", help="output of visionzoo embed (.parquet, or .npy + .index.json)")
    p.add_argument("queries", nargs="*", metavar="QUERY", help="query images and/or folders (searched recursively)")
    p.add_argument("--topk", "-k", type=int, default=5, help="neighbours per query (default 5)")
    p.add_argument("--dedup", type=float, default=None, metavar="THRESHOLD",
                   help="list groups of near-duplicates: images linked by cosine similarity >= THRESHOLD (e.g. 0.9)")
    p.add_argument("--index", choices=INDEX_KINDS, default="auto",
                   help="exact (compare with every vector), hnsw (approximate graph) or auto: exact up to "
                        "--exact-max vectors (default auto)")
    p.add_argument("--exact-max", type=int, default=EXACT_MAX, help=f"largest set searched exactly by auto (default {EXACT_MAX})")
    set_completer(p.add_argument("--model", "-m", default=None,
                                 help="model for embedding the queries (default: the one recorded in EMBEDDINGS)"),
                  model_completer())
    p.add_argument("--checkpoint", default=None, help="local checkpoint for the query model (default: the recorded one)")
    p.add_argument("--batch-size", "-b", type=int, default=32, help="query images per forward pass (default 32)")
    p.add_argument("--device", default="cpu", help="device for embedding the queries (default cpu)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _query_model(emb: Any, args: argparse.Namespace) -> tuple[str, str | None, bool]:
    meta = emb.meta
    if args.model:
        return args.model, args.checkpoint, args.checkpoint is None
    checkpoint = args.checkpoint or meta.get("checkpoint")
    name = meta.get("model_name") or (f"{emb.model}.{emb.tag}" if emb.tag else emb.model)
    if not name:
        raise ValueError(f"{args.embeddings} does not record its model; pass --model")
    return name, checkpoint, checkpoint is None and bool(meta.get("pretrained", bool(emb.tag)))


def run_similar(args: argparse.Namespace) -> int:
    from ..data.images import find_images
    from ..embeddings.run import embed_images
    from ..embeddings.similarity import build_index, dedup_groups, search
    from ..embeddings.store import load_embeddings

    if args.topk < 1:
        raise ValueError("--topk must be at least 1")
    if not args.queries and args.dedup is None:
        raise ValueError("give QUERY images / folders, or --dedup THRESHOLD")
    emb = load_embeddings(args.embeddings)
    if not len(emb):
        raise ValueError(f"{args.embeddings} holds no embeddings")
    index = build_index(emb.vectors, kind=args.index, exact_max=args.exact_max)
    result: dict[str, Any] = {"embeddings": str(args.embeddings), "count": len(emb), "index": index.kind,
                              "model": emb.model, "tag": emb.tag}
    failed = 0
    if args.queries:
        queries = [str(q) for q in find_images(args.queries)]
        if not queries:
            raise FileNotFoundError(f"no images found in {', '.join(args.queries)}")
        name, checkpoint, pretrained = _query_model(emb, args)
        vectors, ok, bad = embed_images(name, queries, batch_size=args.batch_size, checkpoint=checkpoint,
                                        pretrained=pretrained, device=args.device)
        rows: dict[str, dict[str, Any]] = {q: {"image": q} for q in queries}
        for q, err in bad:
            rows[q]["error"] = err
            failed += 1
        if ok:
            sims, ids = search(index, vectors, args.topk + 1)  # one extra: a query that is in the set finds itself
            for q, srow, irow in zip(ok, sims, ids):
                hits = [(float(s), int(i)) for s, i in zip(srow, irow) if i >= 0 and not _same_file(emb.paths[i], q)]
                rows[q]["neighbors"] = [{"path": emb.paths[i], "score": round(s, 6)} for s, i in hits[:args.topk]]
        result["queries"] = [rows[q] for q in queries]
    if args.dedup is not None:
        result["dedup_threshold"] = args.dedup
        result["groups"] = [[emb.paths[i] for i in g] for g in dedup_groups(emb.vectors, args.dedup, index)]
    if args.json:
        print(json.dumps(result))
        return 1 if failed else 0
    for row in result.get("queries", []):
        if "error" in row:
            print(f"{row['image']}: error: {row['error']}", file=sys.stderr)
            continue
        print(row["image"])
        for n in row["neighbors"]:
            print(f"  {n['score']:.4f}  {n['path']}")
    if "groups" in result:
        groups = result["groups"]
        print(f"# {len(groups)} near-duplicate group(s) at cosine similarity >= {args.dedup}", file=sys.stderr)
        for g, members in enumerate(groups, 1):
            print(f"group {g} ({len(members)} images)")
            for m in members:
                print(f"  {m}")
    return 1 if failed else 0
