"""Write ``visionzoo/models/cfgs/<family>.json`` (pretrained cfgs of every tag) from fixture data.

The conformance fixtures carry the published pretrained cfg of every ``arch.tag``; this copies
that data (not code) for the architectures a family module registers, in fixture order.

    python tools/gen_cfgs.py resnet resnetv2
"""
from __future__ import annotations

import gzip
import importlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"
OUT = ROOT / "visionzoo" / "models" / "cfgs"
DROP = {"architecture", "tag"}


def main(families: list[str]) -> None:
    from visionzoo import registry

    for family in families:
        importlib.import_module(f"visionzoo.models.{family}")
        registered = [a for a, m in registry._model_module.items() if m == family]
        with gzip.open(FIXTURES / f"{family}.json.gz", "rt", encoding="utf-8") as f:
            fixture = json.load(f)
        data: dict[str, dict] = {}
        for rec in fixture["models"]:
            if rec["name"] in registered and "tags" in rec:
                data[rec["name"]] = {t: {k: v for k, v in c.items() if k not in DROP} for t, c in rec["tags"].items()}
        missing = [m["name"] for m in fixture["models"] if m["name"] not in registered]
        extra = [a for a in registered if a not in data]
        if extra:
            raise SystemExit(f"{family}: registered but not in the fixture (add cfgs by hand): {extra}")
        OUT.mkdir(parents=True, exist_ok=True)
        with open(OUT / f"{family}.json", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=0, separators=(",", ":"))
            f.write("\n")
        print(f"{family}: {len(data)} archs written" + (f"; not implemented: {missing}" if missing else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
