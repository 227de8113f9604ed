"""``features_only`` state_dicts have the reference wrapper's layout (keys, order, shapes).

``fixtures/features_state_dict/<family>.json.gz`` (shared/conformance/SPEC.md, last section)
lists, per architecture with feature maps, the reference wrapper's class name and the ordered
``[key, shape]`` list of ``create_model(name, features_only=True, out_indices=<record's>)``.
Every family with both a cfg file (``visionzoo/models/cfgs/<family>.json``) and such a fixture is
checked, so a family added later is covered as soon as its fixture is copied here. The
``out_indices`` are those of the family's conformance record (``fixtures/<family>.json.gz``,
``features.out_indices``), the wrapper's default where there is none. Builds are on the meta
device: only structure is compared. Each build also goes through the wrapper API checks of
``feature_checks.check_feature_api`` (``test_feature_cls.py`` runs them on the architectures
without a layout fixture), so every architecture is built once.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

import visionzoo
from feature_checks import check_feature_api, meta_build
import fixture_data

FIXTURES = Path(__file__).parent / "fixtures"
LAYOUTS = FIXTURES / "features_state_dict"
CFG_DIR = Path(visionzoo.__file__).parent / "models" / "cfgs"
FAMILIES = sorted(p.name[: -len(".json.gz")] for p in LAYOUTS.glob("*.json.gz")
                  if (CFG_DIR / (p.name[: -len(".json.gz")] + ".json")).exists())


@lru_cache(maxsize=None)
def layouts(family: str) -> dict:
    return fixture_data.layout_records(family)


@lru_cache(maxsize=None)
def record_out_indices(family: str) -> dict:
    """name -> out_indices of the family's conformance records (absent: the default)."""
    records = fixture_data.records(family)
    out = {}
    for rec in records:
        feats = rec.get("features") or {}
        if "out_indices" in feats:
            out[rec["name"]] = tuple(feats["out_indices"])
    return out


def _cases() -> list:
    return [pytest.param(family, name, id=f"{family}:{name}") for family in FAMILIES for name in layouts(family)]


def test_layouts_cover_the_implemented_families():
    assert {"resnet", "convnext", "vision_transformer", "efficientnet", "swin_transformer"} <= set(FAMILIES)
    assert sum(len(layouts(f)) for f in FAMILIES) >= 427


def _diff(ours: list, ref: list) -> str:
    ok, rk = [k for k, _ in ours], [k for k, _ in ref]
    missing = [k for k in rk if k not in set(ok)][:5]
    extra = [k for k in ok if k not in set(rk)][:5]
    shapes = [(k, s, dict(ref)[k]) for k, s in ours if k in dict(ref) and dict(ref)[k] != s][:5]
    return (f"{len(ours)} keys vs reference {len(ref)}: missing={missing} extra={extra} shapes={shapes} "
            f"order_differs={ok != rk}")


@pytest.mark.parametrize("family,name", _cases())
def test_features_only_layout(family: str, name: str) -> None:
    """The layout, then (on the same build, see feature_checks) the wrapper API checks."""
    entry = layouts(family)[name]
    assert visionzoo.is_model(name), f"{name} has a reference layout but is not registered"
    out_indices = record_out_indices(family).get(name)
    kwargs = {} if out_indices is None else {"out_indices": out_indices}
    # the call transformers' TimmBackbone makes
    with meta_build():
        model = visionzoo.create_model(name, pretrained=False, features_only=True, in_chans=3, **kwargs)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == entry["state_dict"], _diff(ours, entry["state_dict"])
    assert type(model).__name__ == entry["wrapper"]
    check_feature_api(model, model.feature_info.out_indices)
