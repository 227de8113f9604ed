"""Conformance with the reference fixtures: structure, numerics, features and pretrained cfgs.

Every record of every fixture whose family is implemented becomes test cases. Structure is
checked on the meta device; numerics build on meta, materialise empty and apply the fill (no
random init), then the same model is wrapped for ``features_only`` (one fill per architecture).
"""
from __future__ import annotations

import importlib
import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch

import visionzoo
from visionzoo.builder import init_non_persistent_buffers
from visionzoo.features import create_feature_model
import fixture_data

from fill import fill_model, make_input

FIXTURES = Path(__file__).parent / "fixtures"
CFG_DIR = Path(visionzoo.__file__).parent / "models" / "cfgs"
FAMILIES = sorted(p.name[: -len(".json.gz")] for p in FIXTURES.glob("*.json.gz") if (CFG_DIR / (p.name[: -len(".json.gz")] + ".json")).exists())


@lru_cache(maxsize=None)
def fixture(family: str) -> dict:
    return {rec["name"]: rec for rec in fixture_data.records(family)}


# Numerics budget. CI checks logits + feature maps of every record whose cost (parameters x input
# pixels, in millions at 224x224) is at most NUMERIC_BUDGET, plus each family's cheapest record, so
# every family is covered and the run stays short; structure and cfgs are checked for every record.
# The full numeric conformance (every record): VISIONZOO_CONFORMANCE=full python3 tools/conformance.py
NUMERIC_BUDGET = 15.0
FULL = os.environ.get("VISIONZOO_CONFORMANCE", "").lower() == "full"


def _cost(rec: dict) -> float:
    _, h, w = rec["input_size"]
    return rec["num_params"] * h * w / (224 * 224) / 1e6


def _has_numeric(rec: dict) -> bool:
    return rec.get("numeric") is not None and not rec["numeric"].get("ill_conditioned")


def _in_budget(family: str, name: str) -> bool:
    recs = [r for r in fixture(family).values() if "error" not in r and _has_numeric(r)]
    return _cost(fixture(family)[name]) <= NUMERIC_BUDGET or name == min(recs, key=_cost)["name"]


def _cases(kind: str) -> list:
    cases = []
    for family in FAMILIES:
        for name, rec in fixture(family).items():
            if "error" in rec:
                continue
            marks = []
            if kind == "numeric":
                if not _has_numeric(rec):
                    marks.append(pytest.mark.skip(reason="fixture has no numeric record (structure only)"))
                elif not FULL and not _in_budget(family, name):
                    marks.append(pytest.mark.skip(reason="outside the CI numeric budget (VISIONZOO_CONFORMANCE=full)"))
            cases.append(pytest.param(family, name, id=f"{family}:{name}", marks=marks))
    return cases


def test_some_family_is_checked():
    assert FAMILIES, "no fixture family has an implementation: nothing would be checked"


def _expected_sd(rec):
    return [(k, tuple(shape), dtype) for k, shape, dtype in rec["state_dict"]]


@pytest.mark.parametrize("family,name", _cases("structure"))
def test_structure(family: str, name: str) -> None:
    rec = fixture(family)[name]
    with torch.device("meta"):
        model = visionzoo.create_model(name)
    ours = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()]
    expected = _expected_sd(rec)
    if ours != expected:
        ok, ek = dict((k, (s, d)) for k, s, d in ours), dict((k, (s, d)) for k, s, d in expected)
        missing = [k for k in ek if k not in ok][:10]
        extra = [k for k in ok if k not in ek][:10]
        shape = [(k, ok[k], ek[k]) for k in ek if k in ok and ok[k] != ek[k]][:10]
        order = [k for k, _, _ in ours] != [k for k, _, _ in expected]
        pytest.fail(f"state_dict differs: missing={missing} extra={extra} shape/dtype={shape} order_differs={order}")
    assert sum(p.numel() for p in model.parameters()) == rec["num_params"]
    assert model.num_features == rec["num_features"]
    assert model.num_classes == rec["num_classes"]
    ours_fi = [(f["num_chs"], f["reduction"]) for f in model.feature_info]
    assert ours_fi == [(f["num_chs"], f["reduction"]) for f in rec["feature_info"]]
    assert [f["module"] for f in model.feature_info] == [f["module"] for f in rec["feature_info"]]


def _close(ours: torch.Tensor, ref: torch.Tensor, rtol: float, scale: float) -> tuple[bool, float]:
    err = (ours.double() - ref.double()).abs().max().item()
    return err <= rtol * scale + 1e-5, err


@pytest.mark.parametrize("family,name", _cases("numeric"))
def test_numeric(family: str, name: str) -> None:
    rec = fixture(family)[name]
    num = rec["numeric"]
    with torch.device("meta"):
        model = visionzoo.create_model(name)
    model = model.to_empty(device="cpu")
    init_non_persistent_buffers(model)
    fill_model(model)
    model.eval()
    x = make_input(rec["input_size"], num["batch"])
    with torch.inference_mode():
        logits = model(x)
    ref = torch.tensor(num["logits"]).reshape(num["logits_shape"])
    assert tuple(logits.shape) == tuple(ref.shape)
    ok, err = _close(logits, ref, num["rtol"], ref.abs().max().item())
    assert ok, f"logits max abs err {err:.3g} > {num['rtol']} * {ref.abs().max().item():.3g}"

    feats = rec.get("features") or {}
    if "error" in feats or not feats:
        return
    fmodel = create_feature_model(model, feature_cfg=_variant_feature_cfg(family, name),
                                  out_indices=feats["out_indices"]).eval()
    assert fmodel.feature_info.channels() == feats["channels"]
    assert fmodel.feature_info.reduction() == feats["reduction"]
    if _keys_renamed(fmodel, model):
        fill_model(fmodel)  # by the wrapper's own keys, as the reference filled its wrapper
    with torch.inference_mode():
        maps = fmodel(x)
    problem = _maps_problem(maps, feats, num["rtol"])
    assert problem is None, problem


# The reference filled its features_only wrapper by the wrapper's state_dict keys, and the fill
# depends only on key and shape. Our wrapper has the reference's layout (test_features_layout), so
# it is filled by its own keys wherever they differ from the model's (flattened or nested names).
def _keys_renamed(fmodel: torch.nn.Module, model: torch.nn.Module) -> bool:
    model_keys = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    return any(model_keys.get(id(t)) != k for k, t in fmodel.state_dict(keep_vars=True).items())


def _variant_feature_cfg(family: str, name: str):
    """An architecture's own ``feature_cfg`` override (its ``Variant``'s), if any."""
    variant = getattr(importlib.import_module(f"visionzoo.models.{family}"), "VARIANTS", {}).get(name)
    return getattr(variant, "feature_cfg", None)


def _maps_problem(maps, feats: dict, rtol: float):
    """None if the feature maps match the record, else what differs."""
    if len(maps) != len(feats["outputs"]):
        return f"{len(maps)} feature maps, expected {len(feats['outputs'])}"
    for i, (m, out) in enumerate(zip(maps, feats["outputs"])):
        if list(m.shape) != out["shape"]:
            return f"feature {i} shape {list(m.shape)} != {out['shape']}"
        vals = m.reshape(-1)[torch.tensor(out["index"])]
        ok, err = _close(vals, torch.tensor(out["values"]), rtol, out["absmax"])
        if not ok:
            return f"feature map {i}: max abs err {err:.3g} (absmax {out['absmax']:.3g})"
        if abs(m.double().mean().item() - out["mean"]) > rtol * out["absmax"] + 1e-5:
            return f"feature map {i}: mean {m.double().mean().item():.6g} != {out['mean']:.6g}"
    return None


_CFG_FIELDS = ("hf_hub_id", "input_size", "crop_pct", "mean", "std", "interpolation", "num_classes",
               "first_conv", "classifier")


def _norm(v):
    return tuple(_norm(x) for x in v) if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("family", FAMILIES)
def test_pretrained_cfgs(family: str) -> None:
    records = {n: r for n, r in fixture(family).items() if "error" not in r}
    listed = set(visionzoo.list_models(module=family, pretrained=True, include_tags=True))
    expected_listed = set()
    for name, rec in records.items():
        for tag, ref in rec["tags"].items():
            cfg = visionzoo.get_pretrained_cfg(f"{name}.{tag}")
            assert cfg is not None and cfg.tag == tag
            for field in _CFG_FIELDS:
                assert _norm(getattr(cfg, field)) == _norm(ref.get(field)), f"{name}.{tag} {field}"
            if ref.get("hf_hub_id") or ref.get("url") or ref.get("file"):
                expected_listed.add(f"{name}.{tag}")
        assert visionzoo.get_pretrained_cfg(name).tag == next(iter(rec["tags"]))
    # visionzoo may add its own tags (declared in models/extra_cfgs), never silently
    extra = {f"{n}.{t}" for n in records for t in visionzoo.registry.extra_tags(n)}
    assert listed - extra == expected_listed
    assert set(visionzoo.list_models(module=family)) == set(records)
