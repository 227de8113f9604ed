"""``features_only`` wrappers as code written against the reference library uses them (issue 25).

* the four ``feature_cls`` choices (``list``, ``dict``, ``getter``, ``hook``) and ``output_fmt``;
* the public :class:`FeatureInfo` with ``out_indices`` given as an int (last n) or a sequence;
* transformers' ``TimmBackbone`` replayed: ``create_model(name, pretrained=, features_only=True,
  in_chans=, out_indices=)``, then ``feature_info.get_dicts()`` (``module``, ``index``),
  ``feature_info.info`` and ``return_layers`` switched to every level and back.

Every registered architecture is built once, on the meta device (structure only): here those
without a reference layout fixture, in test_features_layout.py the others (on the build whose
layout it compares). Real forwards run on small architectures of several families.
"""
from __future__ import annotations

import copy
import io
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

import visionzoo
from visionzoo.features import create_feature_model
from feature_checks import WRAPPER_OF, check_feature_api, meta_build, replay_timm_backbone
from test_features_layout import FAMILIES, layouts


def _unchecked_archs() -> list[str]:
    """Registered architectures without a layout fixture; the others are checked on the build
    of test_features_layout.py (one meta build per architecture in all)."""
    with_layout = {name for family in FAMILIES for name in layouts(family)}
    return [name for name in visionzoo.list_models() if name not in with_layout]


@pytest.mark.parametrize("name", _unchecked_archs())
def test_feature_api(name: str) -> None:
    """TimmBackbone's calls (its default out_indices=(-1,)), FeatureInfo, the four feature_cls."""
    with meta_build():
        backbone = visionzoo.create_model(name, pretrained=False, features_only=True, in_chans=3, out_indices=(-1,))
    check_feature_api(backbone, (-1,))


# --------------------------------------------------------------------------------------------
# real forwards on small architectures

SMALL = {  # name -> (create kwargs, input size)
    "test_resnet": ({}, 32),
    "test_convnext": ({}, 32),
    "test_efficientnet": ({}, 32),
    "mobilenetv3_small_050": ({}, 32),
    "regnetx_002": ({}, 32),
    "ese_vovnet19b_dw": ({}, 32),
    "resnetv2_18": (dict(channels=(16, 32, 64, 128)), 64),
    "densenet121": (dict(growth_rate=8, block_config=(1, 2, 1, 1), stem_width=16), 64),
    "swin_tiny_patch4_window7_224": (dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)), 224),
    "test_vit": ({}, None),
}


def _input(model: nn.Module, size: int | None) -> torch.Tensor:
    if size is None:
        size = model.pretrained_cfg.input_size[-1]
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(SMALL))
def test_feature_cls_forward(name: str) -> None:
    kwargs, size = SMALL[name]
    torch.manual_seed(0)
    base = visionzoo.create_model(name, **kwargs).eval()
    x = _input(base, size)
    levels = tuple(range(len(base.feature_info)))
    native = getattr(base, "output_fmt", None) or "NCHW"
    with torch.no_grad():
        ref = base.forward_intermediates(x, indices=levels, output_fmt=native, intermediates_only=True)
        outs = {}
        for feature_cls in ("list", "dict", "hook", "getter"):
            w = create_feature_model(copy.deepcopy(base), feature_cls=feature_cls, out_indices=levels).eval()
            outs[feature_cls] = w(x)
    assert isinstance(outs["list"], list) and isinstance(outs["dict"], OrderedDict)
    assert list(outs["dict"]) == [f["module"] for f in base.feature_info]
    for feature_cls in ("list", "getter"):
        assert len(outs[feature_cls]) == len(ref)
        for got, want in zip(outs[feature_cls], ref):
            assert torch.equal(got, want)
    for got, want in zip(outs["dict"].values(), ref):
        assert torch.equal(got, want)
    for got, want, info in zip(outs["hook"], ref, base.feature_info):
        if got.ndim == 4:  # a map: the same as forward_intermediates'
            assert torch.equal(got, want)
        else:  # token models: the block's raw output, (B, tokens, C)
            assert got.ndim == 3 and got.shape[-1] == info["num_chs"]


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext", "swin_tiny_patch4_window7_224", "test_vit"])
def test_timm_backbone_replay_forward(name: str) -> None:
    kwargs, size = SMALL[name]
    out_indices = (1, 2, 3)
    torch.manual_seed(0)
    backbone = visionzoo.create_model(name, pretrained=False, features_only=True, in_chans=3,
                                      out_indices=out_indices, **kwargs).eval()
    return_layers, all_layers = replay_timm_backbone(backbone, out_indices)
    x = _input(backbone, size)
    with torch.no_grad():
        feature_maps = backbone(x)  # output_hidden_states=False
        backbone.return_layers = all_layers  # output_hidden_states=True
        hidden_states = backbone(x)
        backbone.return_layers = return_layers
        again = backbone(x)
    assert len(feature_maps) == len(out_indices) and len(again) == len(out_indices)
    # every level up to the deepest requested one (the rest was pruned, as in the reference)
    assert len(hidden_states) == max(out_indices) + 1
    for i, fmap in zip(out_indices, feature_maps):
        assert torch.equal(hidden_states[i], fmap)
    chan_dim = -1 if backbone.output_fmt == "NHWC" else 1
    assert [h.shape[chan_dim] for h in hidden_states] == [f["num_chs"] for f in backbone.feature_info.info[:4]]


def test_create_model_feature_cls_and_output_fmt() -> None:
    x = torch.randn(1, 3, 64, 64)
    outs = {}
    for feature_cls in ("list", "dict", "getter", "hook"):
        torch.manual_seed(0)
        m = visionzoo.create_model("test_convnext", features_only=True, feature_cls=feature_cls,
                                   out_indices=(1, 3)).eval()
        assert type(m) is WRAPPER_OF[feature_cls] and m.feature_info.out_indices == (1, 3)
        with torch.no_grad():
            outs[feature_cls] = list(m(x).values()) if feature_cls == "dict" else m(x)
    for feature_cls in ("dict", "getter", "hook"):
        for a, b in zip(outs["list"], outs[feature_cls]):
            assert torch.equal(a, b)
    # the family's layout for list/dict/hook (flattened ConvNeXt stages), nested for getter
    torch.manual_seed(0)
    nhwc = visionzoo.create_model("test_convnext", features_only=True, out_indices=(1, 3), output_fmt="NHWC").eval()
    assert "stages_1.downsample.1.weight" in nhwc.state_dict() and nhwc.output_fmt == "NHWC"
    with torch.no_grad():
        maps = nhwc(x)
    for a, b in zip(maps, outs["list"]):
        assert torch.equal(a, b.permute(0, 2, 3, 1))
    # flatten_sequential can be switched off: the model's own names
    plain = visionzoo.create_model("test_convnext", features_only=True, flatten_sequential=False)
    assert "stages.1.downsample.1.weight" in plain.state_dict()
    with pytest.raises(ValueError, match="feature_cls"):
        visionzoo.create_model("test_convnext", features_only=True, feature_cls="fx")
    with pytest.raises(TypeError, match="feature_cls"):
        visionzoo.create_model("test_convnext", feature_cls="list")
    with pytest.raises(ValueError, match="output_fmt"):
        visionzoo.create_model("test_vit", features_only=True, output_fmt="NHWC")(torch.randn(1, 3, 224, 224))


def test_wrapper_modules_stay_the_models() -> None:
    """Swapping a module through the wrapper (as frozen-BatchNorm helpers do) changes what runs;
    the wrapper survives deepcopy and torch.save/load."""
    torch.manual_seed(0)
    w = visionzoo.create_model("resnetv2_18", features_only=True, out_indices=(1, 2)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = w(x)
        w.stages_0 = _Double()  # a flattened name: the model's stages[0]
        assert w.model.stages[0] is w.stages_0
        after = w(x)
    assert not torch.equal(after[0], before[0])
    for clone in (copy.deepcopy(w), _save_load(w)):
        assert list(clone.state_dict()) == list(w.state_dict())
        clone.stages_1 = nn.Identity()
        assert clone.model.stages[1] is clone.stages_1 and w.model.stages[1] is not clone.stages_1
        with torch.no_grad():
            assert [m.shape for m in clone(x)] == [after[0].shape, after[0].shape]


class _Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


def _save_load(m: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def test_wrappers_train_eval_and_device_moves() -> None:
    """train()/eval() and dtype/device moves reach the modules the model runs, for every wrapper."""
    for feature_cls in ("list", "getter", "hook", "dict"):
        torch.manual_seed(0)
        w = visionzoo.create_model("test_convnext", features_only=True, feature_cls=feature_cls, out_indices=(0, 1))
        w.eval()
        assert not w.model.training and not any(m.training for m in w.modules())
        w.train()
        assert w.model.training and all(m.training for m in w.model.stages[:2].modules())
        w = w.to(torch.float64).eval()
        assert all(p.dtype == torch.float64 for p in w.model.stages[:2].parameters())
        with torch.no_grad():
            out = w(torch.randn(1, 3, 32, 32, dtype=torch.float64))
        assert all(t.dtype == torch.float64 for t in (out.values() if isinstance(out, dict) else out))
