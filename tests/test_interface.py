"""Every family honours the model interface (one small representative per family).

The representative is the family's smallest architecture by fixture parameter count, built on
CPU with random init at a small input size.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import visionzoo
from visionzoo.data.config import resolve_model_data_config
from visionzoo.interface import VisionModel
import fixture_data

FIXTURES = Path(__file__).parent / "fixtures"


def _representatives() -> list:
    out = []
    for family in visionzoo.list_modules():
        recs = [r for r in fixture_data.records(family) if "error" not in r and visionzoo.is_model(r["name"])]
        if recs:
            rec = min(recs, key=lambda r: r["num_params"])
            out.append(pytest.param(rec["name"], rec["input_size"], id=f"{family}:{rec['name']}"))
    return out


def _size(input_size):
    c, h, w = input_size
    return (2, c, h, w) if h <= 64 else (2, c, min(h, 224), min(w, 224))


@pytest.mark.parametrize("name,input_size", _representatives())
def test_interface(name, input_size):
    torch.manual_seed(0)
    model = visionzoo.create_model(name).eval()
    assert isinstance(model, VisionModel)
    x = torch.randn(_size(input_size))
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        # num_classes=0 (e.g. self-supervised weights): the head hands out the pre-logits
        assert logits.shape == (2, model.num_classes or model.head_hidden_size)
        torch.testing.assert_close(model(x), logits)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        # intermediates: one map per feature_info level, with its channels
        n = len(model.feature_info)
        final, maps = model.forward_intermediates(x)
        assert len(maps) == n
        chans = [m.shape[1] if m.ndim == 4 else m.shape[-1] for m in maps]
        assert chans == [f["num_chs"] for f in model.feature_info]
        only = model.forward_intermediates(x, indices=[0, n - 1], intermediates_only=True)
        assert len(only) == 2
        torch.testing.assert_close(only[-1], maps[-1])
        # grad checkpointing must not change the result
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), logits, rtol=1e-4, atol=1e-4)
        model.set_grad_checkpointing(False)
    # new head
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_classifier() is not None
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.head_hidden_size)


@pytest.mark.parametrize("name,input_size", _representatives())
def test_features_only_every_family(name, input_size):
    model = visionzoo.create_model(name, features_only=True).eval()
    x = torch.randn(_size(input_size))
    with torch.no_grad():
        maps = model(x)
    nhwc = model.output_fmt == "NHWC"  # native layout of the family (e.g. Swin), NCHW otherwise
    assert [m.shape[-1 if nhwc else 1] for m in maps] == model.feature_info.channels()
    for m, red in zip(maps, model.feature_info.reduction()):
        assert m.ndim == 4
        width = m.shape[2] if nhwc else m.shape[3]
        # a fixed-size model that resizes its input itself (CrossViT's branches) works at the cfg size
        ref_w = input_size[-1] if getattr(model.pretrained_cfg, "fixed_input_size", False) else x.shape[-1]
        nominal = ref_w / red
        # padded nets land within a pixel of the nominal width; nets with unpadded (VALID) convs
        # (Inception, Xception) lose a few border pixels per level, never more than ~10 %
        assert -1 <= nominal - width <= max(1.0, 0.1 * nominal + 2), (m.shape, red)


def _every_arch() -> list:
    return [pytest.param(name, id=name) for name in visionzoo.list_models()]


@pytest.mark.parametrize("name", _every_arch())
def test_interface_every_arch(name):
    """The interface on every registered architecture, on the meta device (shapes only, one pass)."""
    with torch.device("meta"):
        model = visionzoo.create_model(name).eval()
        assert isinstance(model, VisionModel), f"{name} misses part of the VisionModel interface"
        info = model.feature_info
        assert info and all({"num_chs", "reduction", "module"} <= set(f) for f in info)
        c, h, w = model.pretrained_cfg.input_size
        # the eval transform is built for the channels the model takes (not its first layer's width)
        assert resolve_model_data_config(model)["input_size"][0] == c, f"{name}: data config channels"
        feats, maps = model.forward_intermediates(torch.empty(1, c, h, w))
        assert len(maps) == len(info)
        for m, f in zip(maps, info):
            if m.ndim == 4:  # NCHW maps; token families may hand out NLC sequences
                assert m.shape[1] == f["num_chs"], (m.shape, f)
        # num_classes=0 (e.g. self-supervised weights): the head hands out the pre-logits
        assert model.forward_head(feats).shape == (1, model.num_classes or model.head_hidden_size)
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model.forward_head(feats).shape == (1, 3)
        assert model.get_classifier() is not None


@pytest.mark.parametrize("name,norm_attr", [("convnext_tiny_hnf", "norm_pre"), ("starnet_s1", "norm")])
def test_prune_norm_drops_the_final_norm(name, norm_attr):
    """``prune_intermediate_layers(prune_norm=True)`` replaces the norm between trunk and head."""
    with torch.device("meta"):
        model = visionzoo.create_model(name)
        assert not isinstance(getattr(model, norm_attr), nn.Identity)
        kept = visionzoo.create_model(name)
        kept.prune_intermediate_layers(len(kept.feature_info), prune_norm=False)
        model.prune_intermediate_layers(len(model.feature_info), prune_norm=True)
    assert isinstance(getattr(model, norm_attr), nn.Identity)
    assert not isinstance(getattr(kept, norm_attr), nn.Identity)


def test_vovnet_prune_to_the_stem_level_drops_the_strided_stem_conv():
    with torch.device("meta"):
        model = visionzoo.create_model("ese_vovnet19b_dw")
        assert len(model.stem) == 3
        model.prune_intermediate_layers([0])
    assert len(model.stages) == 0 and len(model.stem) == 2
