"""ViT pretrained weights loaded into a model built with another ``global_pool``.

Reference structure rules: token averages/maxima are normed after pooling (``fc_norm``, the
final ``norm`` is the identity); a checkpoint's attention-pool head is dropped when the model is
built without one, and the load report says so.
"""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import visionzoo

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "vision_transformer.json.gz"


def _save_default(tmp_path: Path, arch: str) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = visionzoo.create_model(arch)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"{arch}.safetensors"
    save_file(sd, str(path))
    return path, sd


@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_gap_checkpoint_loads_with_other_token_pool(tmp_path, pool):
    """test_vit2 (reg token + GAP + fc_norm): 'max'/'avgmax' keep fc_norm, so its weights load."""
    path, sd = _save_default(tmp_path, "test_vit2")
    model = visionzoo.create_model("test_vit2", pretrained=True, global_pool=pool,
                                   pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert isinstance(model.norm, torch.nn.Identity)
    assert isinstance(model.fc_norm, torch.nn.LayerNorm)
    assert list(model.state_dict()) == list(sd)  # the default (reference) layout, whatever the pool
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    report = model.pretrained_load_report
    assert report.dropped == [] and report.initialized == [] and not report.classifier_dropped
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens:]
        pooled = tokens.amax(1) if pool == "max" else 0.5 * (tokens.mean(1) + tokens.amax(1))
        torch.testing.assert_close(model(x), model.head(model.fc_norm(pooled)))


@pytest.mark.skipif(not FIXTURE.is_file(), reason="conformance fixtures not present")
def test_token_pool_layout_matches_reference_for_gap_archs():
    """Built with global_pool='max', the reg-GAP archs keep the reference's keys (fc_norm, no norm)."""
    records = {r["name"]: r for r in json.load(gzip.open(FIXTURE))["models"]}
    for arch in ("test_vit2", "vit_dlittle_patch16_reg1_gap_256"):
        expected = [k for k, _, _ in records[arch]["state_dict"]]
        with torch.device("meta"):
            model = visionzoo.create_model(arch, global_pool="max")
        assert list(model.state_dict()) == expected, arch


def test_map_checkpoint_into_avg_model_drops_attn_pool(tmp_path, caplog):
    """test_vit3 (MAP head) loaded with global_pool='avg': attn_pool.* (13) and the pre-pool norm
    are dropped and reported; fc_norm starts as the identity affine; everything else loads."""
    path, sd = _save_default(tmp_path, "test_vit3")
    with caplog.at_level(logging.INFO, logger="visionzoo.pretrained.load"):
        model = visionzoo.create_model("test_vit3", pretrained=True, global_pool="avg",
                                       pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.attn_pool is None
    report = model.pretrained_load_report
    attn_keys = sorted(k for k in sd if k.startswith("attn_pool."))
    assert len(attn_keys) == 13
    assert sorted(report.dropped) == sorted(attn_keys + ["norm.weight", "norm.bias"])
    assert sorted(report.initialized) == ["fc_norm.bias", "fc_norm.weight"]
    assert torch.equal(model.fc_norm.weight, torch.ones(96)) and torch.equal(model.fc_norm.bias, torch.zeros(96))
    own = model.state_dict()
    for k, v in sd.items():
        if k in own and not k.startswith(("norm.", "fc_norm.")):
            assert torch.equal(own[k], v), k
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "attn_pool.* (13)" in warnings[0] and "dropped 15" in warnings[0]
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 160, 160))).all()


def test_map_checkpoint_default_pool_loads_everything(tmp_path):
    path, sd = _save_default(tmp_path, "test_vit3")
    model = visionzoo.create_model("test_vit3", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.pretrained_load_report.dropped == [] and model.attn_pool is not None
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_classifier_drop_is_reported(tmp_path):
    path, _ = _save_default(tmp_path, "test_vit2")
    model = visionzoo.create_model("test_vit2", pretrained=True, num_classes=7,
                                   pretrained_cfg_overlay=dict(file=str(path)))
    report = model.pretrained_load_report
    assert report.classifier_dropped and sorted(report.dropped) == ["head.bias", "head.weight"]
    assert "head.bias, head.weight" in str(report) or "head.weight, head.bias" in str(report)
