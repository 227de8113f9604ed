"""Shared per-architecture checks of the ``features_only`` wrappers (issue 13 item 2, issue 25).

Building a model dominates these checks, so each architecture is built once:
``test_features_layout.py`` builds the architectures with a reference layout fixture, compares
the layout and runs :func:`check_feature_api` on that same build; ``test_feature_cls.py`` runs it
on every other registered architecture. Together they cover every registered architecture.

On the meta device a model's weight init still runs, through slow Python decompositions of the
random ops, and costs about three quarters of a build. Only shapes matter on meta, so
:func:`meta_build` turns the in-place init ops of meta tensors into no-ops (tensors on real
devices are untouched).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import pytest
import torch
import torch.nn as nn

from visionzoo import FeatureInfo
from visionzoo.features import FeatureDictNet, FeatureGetterNet, FeatureHookNet, FeatureListNet, create_feature_model

WRAPPER_OF = {"list": FeatureListNet, "dict": FeatureDictNet, "hook": FeatureHookNet, "getter": FeatureGetterNet}

_INIT_OPS = ("normal_", "uniform_", "fill_", "zero_", "trunc_normal_", "exponential_", "copy_", "erfinv_",
             "clamp_", "mul_", "add_", "sub_", "div_", "log_normal_", "bernoulli_", "random_")


def _skip_on_meta(op):
    def f(self, *args, **kwargs):
        if self.is_meta:
            return self
        return op(self, *args, **kwargs)

    return f


@contextlib.contextmanager
def meta_build() -> Iterator[None]:
    """Build on the meta device without running init arithmetic on meta tensors."""
    saved = {name: getattr(torch.Tensor, name) for name in _INIT_OPS if hasattr(torch.Tensor, name)}
    for name, op in saved.items():
        setattr(torch.Tensor, name, _skip_on_meta(op))
    try:
        with torch.device("meta"):
            yield
    finally:
        for name, op in saved.items():
            setattr(torch.Tensor, name, op)


def check_feature_info(info: list[dict]) -> None:
    """The public FeatureInfo from a feature_info list, out_indices an int (last n) or a sequence."""
    n = len(info)
    for k in range(1, min(n, 3) + 1):
        fi = FeatureInfo(info, k)
        assert fi.out_indices == tuple(range(n - k, n))
        assert fi.channels() == [f["num_chs"] for f in info[-k:]]
        assert fi.reduction() == [f["reduction"] for f in info[-k:]]
    fi = FeatureInfo(info, [0, -1])
    assert fi.out_indices == (0, n - 1)
    assert fi.module_name() == [info[0]["module"], info[-1]["module"]]
    assert fi.channels(n - 1) == info[-1]["num_chs"] and fi.reduction([0]) == [info[0]["reduction"]]
    assert fi.get_dicts(keys=["num_chs", "index"]) == [{"num_chs": info[0]["num_chs"], "index": 0},
                                                       {"num_chs": info[-1]["num_chs"], "index": n - 1}]
    assert [d["index"] for d in fi.info] == list(range(n)) and len(fi) == n
    for bad in (0, n + 1, [n], [-n - 1]):
        with pytest.raises(ValueError):
            FeatureInfo(info, bad)


def replay_timm_backbone(backbone: nn.Module, out_indices: Sequence[int]) -> tuple[dict, dict]:
    """What transformers' TimmBackbone reads after ``create_model``: ``get_dicts()`` entries'
    ``module``/``index``, ``info`` (every level), and ``return_layers`` switched to every level
    and back. Returns (return_layers, all_layers)."""
    return_layers = {layer["module"]: str(layer["index"]) for layer in backbone.feature_info.get_dicts()}
    all_layers = {layer["module"]: str(i) for i, layer in enumerate(backbone.feature_info.info)}
    n = len(backbone.feature_info.info)
    for d in backbone.feature_info.get_dicts():
        assert {"module", "index", "num_chs", "reduction"} <= set(d)
    names = [layer["module"] for layer in backbone.feature_info.info]
    if len(set(names)) < len(names):
        # levels sharing a module name (CrossViT: one per branch) collapse in a name-keyed table, in
        # the reference's TimmBackbone as here: nothing more to replay
        return return_layers, all_layers
    assert sorted(int(v) for v in return_layers.values()) == sorted(i % n for i in out_indices)
    backbone.return_layers = all_layers
    # levels past the deepest requested one were pruned away and stay absent, as in the reference
    deepest = max(i % n for i in out_indices)
    assert backbone.return_layers == {k: v for k, v in all_layers.items() if int(v) <= deepest}
    backbone.return_layers = return_layers
    assert backbone.return_layers == return_layers
    return return_layers, all_layers


def _unflatten(name: str, model: nn.Module) -> str:
    """The model's dotted path of a wrapper table entry (``stages_0`` -> ``stages.0``)."""
    if name in model._modules:
        return name
    head, _, sub = name.partition("_")
    while head not in model._modules or not isinstance(model._modules[head], nn.Sequential):
        more, _, sub = sub.partition("_")
        head = f"{head}_{more}"
    return f"{head}.{sub}"


def check_feature_api(backbone: nn.Module, out_indices: Sequence[int]) -> None:
    """TimmBackbone replay, FeatureInfo, and the four ``feature_cls`` wrappers (structure only)
    over ``backbone.model``, a meta-device build made with ``out_indices``."""
    model = backbone.model
    assert backbone.pretrained_cfg is model.pretrained_cfg is not None
    assert backbone.default_cfg is model.default_cfg is not None
    replay_timm_backbone(backbone, out_indices)
    info = backbone.feature_info.info
    check_feature_info(info)

    # every level the pruned model still has; wrappers built over it in turn (getter last: it
    # prunes the final norm too), none changes the backbone's layout
    n = len(info)
    levels = tuple(range(max(i % n for i in out_indices) + 1))
    modules = [f["module"] for f in info[:len(levels)]]
    tables = []
    for feature_cls in ("list", "dict", "hook", "getter"):
        w = create_feature_model(model, feature_cls=feature_cls, out_indices=levels)
        assert type(w) is WRAPPER_OF[feature_cls]
        assert w.feature_info.channels() == [f["num_chs"] for f in info[:len(levels)]]
        assert w.pretrained_cfg is model.pretrained_cfg and w.default_cfg is model.default_cfg
        assert list(w.return_layers) == list(dict.fromkeys(modules))  # shared names (CrossViT) collapse
        if feature_cls == "getter":  # the model nested as ``model.``
            assert list(w._modules.items()) == [("model", model)] and not w._parameters and not w._buffers
            continue
        # the model's own modules (flattened names) and directly-owned tensors
        assert w._parameters is model._parameters and w._buffers is model._buffers
        table = list(w._modules.items())
        assert table and all(model.get_submodule(_unflatten(k, model)) is m for k, m in table)
        tables.append([k for k, _ in table])
        w.return_layers = {modules[-1]: "last"}
        assert w.return_layers == {modules[-1]: "last"}
    assert tables[0] == tables[1] == tables[2]  # one layout for list, dict and hook
