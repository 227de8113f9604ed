"""Registry: listing, wildcards, tags, suggestions, laziness, duplicate protection."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch.nn as nn

import visionzoo
from visionzoo import registry


def test_list_models_natural_sort_and_filters():
    names = visionzoo.list_models("resnet*")
    assert names, "resnet family should be registered"
    assert names == sorted(names, key=registry._natural_key)
    # natural sort: resnet18 before resnet101
    assert names.index("resnet18") < names.index("resnet101")
    several = visionzoo.list_models(["resnet18", "resnet34"])
    assert several == ["resnet18", "resnet34"]
    excl = visionzoo.list_models("resnet*", exclude_filters=["resnet1*"])
    assert "resnet18" not in excl and "resnet34" in excl


def test_list_models_module_and_pretrained_tags():
    fam = visionzoo.list_models(module="resnet")
    assert "resnet50" in fam and all(registry.get_model_module(n) == "resnet" for n in fam)
    tagged = visionzoo.list_models("resnet50", pretrained=True)
    assert "resnet50.a1_in1k" in tagged and all(n.startswith("resnet50.") for n in tagged)
    assert visionzoo.list_models("resnet50", pretrained=True, include_tags=False) == ["resnet50"]
    assert set(visionzoo.list_pretrained("resnet50.*")) == set(tagged)
    assert "resnet" in visionzoo.list_modules()


def test_is_model_and_pretrained_cfg():
    assert visionzoo.is_model("resnet50") and visionzoo.is_model("resnet50.a1_in1k")
    assert not visionzoo.is_model("resnet_does_not_exist")
    cfg = visionzoo.get_pretrained_cfg("resnet50.a1_in1k")
    assert cfg.architecture == "resnet50" and cfg.tag == "a1_in1k"
    assert cfg.hf_hub_id == "timm/resnet50.a1_in1k" and cfg.first_conv == "conv1" and cfg.classifier == "fc"
    default = visionzoo.get_pretrained_cfg("resnet50")
    assert default.tag == next(iter(registry.get_arch_pretrained_cfgs("resnet50")))


def test_unknown_names_give_suggestions():
    with pytest.raises(RuntimeError, match="resnet50"):
        visionzoo.model_entrypoint("resnet5O")
    with pytest.raises(RuntimeError, match="Did you mean"):
        visionzoo.create_model("resnet18x")
    with pytest.raises(ValueError, match="available tags"):
        visionzoo.get_pretrained_cfg("resnet50.not_a_tag")


def test_register_user_model_and_duplicate_rejected():
    def my_test_net_for_registry(pretrained: bool = False, **kwargs):
        return nn.Linear(2, 2)

    visionzoo.register_model(my_test_net_for_registry, pretrained_cfgs={"demo": {"num_classes": 2}})
    assert visionzoo.is_model("my_test_net_for_registry")
    assert isinstance(visionzoo.create_model("my_test_net_for_registry"), nn.Linear)
    assert visionzoo.get_pretrained_cfg("my_test_net_for_registry.demo").num_classes == 2
    with pytest.raises(ValueError, match="already registered"):
        visionzoo.register_model(my_test_net_for_registry)
    with pytest.raises(ValueError, match="already registered|built-in"):
        visionzoo.register_model(my_test_net_for_registry, name="resnet50", module="mine")


def test_listing_is_lazy():
    code = ("import sys, visionzoo; n = visionzoo.list_models(pretrained=True); "
            "assert n; print(sorted(m for m in sys.modules if m.startswith('visionzoo.models.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['visionzoo.models.cfgs']" or out.strip() == "[]", out


@pytest.mark.parametrize("family", sorted(p.stem for p in (Path(visionzoo.__file__).parent / "models" / "cfgs").glob("*.json")))
def test_cfg_index_matches_registered_models(family):
    """The lazy index (cfg JSON) lists exactly what the family module registers."""
    import importlib

    importlib.import_module(f"visionzoo.models.{family}")
    registered = {a for a, m in registry._model_module.items() if m == family}
    with open(Path(visionzoo.__file__).parent / "models" / "cfgs" / f"{family}.json") as f:
        indexed = set(json.load(f))
    assert registered == indexed
