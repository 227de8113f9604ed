"""create_model: tags, kwargs, errors, layer flags, meta-device pretrained path."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import visionzoo
from visionzoo.layers.config import is_exportable, is_scriptable


def test_tag_selects_cfg_and_kwargs_reach_model():
    m = visionzoo.create_model("resnet18.tv_in1k", num_classes=7, global_pool="max")
    assert m.pretrained_cfg.tag == "tv_in1k" and m.pretrained_cfg.interpolation == "bilinear"
    assert m.num_classes == 7 and m.default_cfg is m.pretrained_cfg
    assert m.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_none_means_default():
    m = visionzoo.create_model("resnet18", num_classes=None, drop_rate=None, in_chans=None)
    assert m.num_classes == 1000


def test_wrong_kwarg_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"resnet18 \(.*\).*'not_an_arg'"):
        visionzoo.create_model("resnet18", not_an_arg=3)


def test_global_pool_variants_and_reset_classifier():
    x = torch.randn(2, 3, 64, 64)
    m = visionzoo.create_model("resnet18", global_pool="catavgmax", num_classes=5).eval()
    assert m(x).shape == (2, 5)
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 1024)
    m.reset_classifier(0, "avg")
    assert m(x).shape == (2, 512) and m.num_classes == 0
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)
    m.reset_classifier(0, "")
    assert m(x).shape == (2, 512, 2, 2)


def test_features_only_and_out_indices():
    m = visionzoo.create_model("resnet18", features_only=True, out_indices=(1, 3))
    feats = m(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == m.feature_info.channels() == [64, 256]
    assert m.feature_info.reduction() == [4, 16]
    assert not any(k.startswith("fc.") for k in m.state_dict())
    assert not any(k.startswith("layer4.") for k in m.state_dict())
    with pytest.raises(ValueError, match="out of range"):
        visionzoo.create_model("resnet18", features_only=True, out_indices=(7,))


def test_layer_flags_apply_during_construction():
    seen = {}

    def flag_probe_model(pretrained: bool = False, **kwargs):
        seen.update(scriptable=is_scriptable(), exportable=is_exportable())
        return nn.Identity()

    visionzoo.register_model(flag_probe_model)
    visionzoo.create_model("flag_probe_model", scriptable=True, exportable=True)
    assert seen == dict(scriptable=True, exportable=True)
    assert not is_scriptable() and not is_exportable()


def test_pretrained_path_skips_random_init(tmp_path, monkeypatch):
    """With weights to load, the model is built on the meta device: no init kernels run."""
    src = visionzoo.create_model("resnet18")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    calls = []
    orig = nn.init.kaiming_normal_

    def spy(t, *a, **k):
        calls.append(t.device.type)
        return orig(t, *a, **k)

    monkeypatch.setattr(nn.init, "kaiming_normal_", spy)
    m = visionzoo.create_model("resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert all(d == "meta" for d in calls)
    assert all(not p.is_meta for p in m.parameters())
    torch.testing.assert_close(m.state_dict()["layer1.0.conv1.weight"], src.state_dict()["layer1.0.conv1.weight"])


def test_every_model_builds_on_meta_cheaply():
    with torch.device("meta"):
        m = visionzoo.create_model("resnet152")
    assert next(m.parameters()).is_meta


@pytest.mark.parametrize("name", [123, None, b"resnet18", ["resnet18"]])
def test_model_name_must_be_a_str(name):
    with pytest.raises(TypeError, match="model_name"):
        visionzoo.create_model(name)


@pytest.mark.parametrize("arg,value", [("in_chans", 0), ("in_chans", -3), ("in_chans", 3.0), ("in_chans", "3"),
                                       ("in_chans", True), ("num_classes", -1), ("num_classes", 10.5),
                                       ("num_classes", "10"), ("num_classes", False)])
def test_bad_counts_are_value_errors_naming_the_argument(arg, value):
    with pytest.raises(ValueError, match=arg):
        visionzoo.create_model("resnet18", **{arg: value})


def test_valid_counts_still_accepted():
    import numpy as np

    with torch.device("meta"):
        m = visionzoo.create_model("resnet18", num_classes=np.int64(0), in_chans=1)
    assert m.num_classes == 0 and type(m.num_classes) is int
    assert m.conv1.weight.shape[1] == 1
