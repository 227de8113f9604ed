"""Code written against the reference library runs unchanged (issue 25).

* pretrained cfgs (``model.pretrained_cfg`` / ``default_cfg`` / ``get_pretrained_cfg()``) are
  mappings, for every tag of every registered architecture, and equal the reference's cfg dicts
  (the conformance fixtures' ``tags``);
* the unpooled output after ``reset_classifier(0, '')`` has ``pretrained_cfg['pool_size']``, for
  every architecture whose cfg gives one (built and run on the meta device: shapes only);
* ``freeze_batch_norm_2d`` / ``unfreeze_batch_norm_2d`` keep state_dict keys (one architecture
  per family, on meta) and values / outputs (real models);
* the helpers downstream code imports keep the reference's names, keywords and behaviour:
  list / filter keywords, ``model_entrypoint``, ``get_pretrained_cfg(_value)``,
  ``load_checkpoint`` / ``resume_checkpoint``, layer flags, data config and transforms.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import inspect
import json
import pickle
from collections.abc import Mapping, MutableMapping
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import visionzoo
from visionzoo import registry
from visionzoo.layers import config as layer_config
from visionzoo.layers.frozen_bn import (FrozenBatchNorm2d, FrozenBatchNormAct2d, freeze_batch_norm_2d,
                                        unfreeze_batch_norm_2d)
from visionzoo.layers.norm_act import BatchNormAct2d
from visionzoo.pretrained.load import CheckpointError
import fixture_data

FIXTURES = Path(__file__).parent / "fixtures"
ARCHS = visionzoo.list_models()
FAMILIES = visionzoo.list_modules()
# keys every published tag's cfg has (the reference fills them for every model)
ALWAYS_KEYS = {"architecture", "custom_load", "input_size", "fixed_input_size", "interpolation", "crop_pct",
               "crop_mode", "mean", "std", "num_classes", "pool_size", "first_conv", "classifier"}


def _tag_names(arch: str) -> list[str]:
    return [f"{arch}.{tag}" if tag else arch for tag in registry.get_arch_pretrained_cfgs(arch)]


def _norm(v):
    return tuple(_norm(x) for x in v) if isinstance(v, (list, tuple)) else v


# -- cfgs are mappings -----------------------------------------------------------------------------

def _check_mapping(cfg, name: str) -> None:
    assert isinstance(cfg, Mapping) and isinstance(cfg, MutableMapping), name
    keys = list(cfg)
    assert len(cfg) == len(keys) == len(set(keys)) and list(cfg.keys()) == keys, name
    assert list(cfg.values()) == [cfg[k] for k in keys] and list(cfg.items()) == list(zip(keys, cfg.values()))
    for k in keys:
        assert k in cfg and cfg.get(k, "<absent>") == cfg[k], (name, k)
        if k in registry.PretrainedCfg.__dataclass_fields__:
            assert getattr(cfg, k) == cfg[k], (name, k)
    assert "no_such_key" not in cfg and cfg.get("no_such_key") is None and cfg.get("no_such_key", 3) == 3
    with pytest.raises(KeyError):
        cfg["no_such_key"]
    plain = dict(cfg)
    assert plain == cfg and cfg == plain and not (cfg != plain), name
    assert cfg.to_dict() == plain
    json.dumps(plain)  # plain values only


def test_every_tag_cfg_is_a_mapping():
    names = [n for arch in ARCHS for n in _tag_names(arch)]
    assert len(names) >= len(ARCHS)
    for name in names:
        cfg = visionzoo.get_pretrained_cfg(name)
        _check_mapping(cfg, name)
        assert ALWAYS_KEYS <= set(cfg), (name, ALWAYS_KEYS - set(cfg))
        assert cfg["architecture"] == registry.get_arch_name(name)
        again = visionzoo.get_pretrained_cfg(name)
        assert again == cfg and again is not cfg  # equal copies: mutating one leaves the registry alone
        assert visionzoo.get_pretrained_cfg_value(name, "input_size") == cfg["input_size"]
        assert visionzoo.get_pretrained_cfg_value(name, "no_such_key") is None
    # the default tag is the first one, and arch-only names resolve to it
    for arch in ARCHS:
        assert visionzoo.get_pretrained_cfg(arch) == visionzoo.get_pretrained_cfg(_tag_names(arch)[0])


def _fixture_families() -> list[str]:
    return sorted(p.name[: -len(".json.gz")] for p in FIXTURES.glob("*.json.gz")
                  if p.name[: -len(".json.gz")] in FAMILIES)


# architectures whose tag-less default cfg deliberately differs from the reference's, and why
DEFAULT_CFG_EXCEPTIONS = {
    # the reference registers it with vitamin_xlarge_256's cfg (256 px, the 256-px weights); its only
    # tag is the 336-px one, which we use as the default: the weights made for this architecture
    "vitamin_xlarge_336": "vitamin_xlarge_336.datacomp1b_clip",
}


@pytest.mark.parametrize("family", _fixture_families())
def test_cfg_dicts_equal_the_reference(family: str):
    records = [r for r in fixture_data.records(family) if "error" not in r]
    checked = 0
    for rec in records:
        for tag, ref in rec["tags"].items():
            name = f"{rec['name']}.{tag}" if tag else rec["name"]
            ours = visionzoo.get_pretrained_cfg(name)
            ref = {k: _norm(v) for k, v in ref.items()}
            assert ours == ref, (name, {k for k in set(ours) | set(ref) if ours.get(k, "-") != ref.get(k, "-")})
            checked += 1
        if rec["name"] in DEFAULT_CFG_EXCEPTIONS:
            assert visionzoo.get_pretrained_cfg(rec["name"]) == visionzoo.get_pretrained_cfg(
                DEFAULT_CFG_EXCEPTIONS[rec["name"]])
            continue
        assert visionzoo.get_pretrained_cfg(rec["name"]) == {k: _norm(v) for k, v in rec["pretrained_cfg"].items()}
    assert checked


def test_model_cfg_attributes_behave_as_dicts():
    with torch.device("meta"):
        model = visionzoo.create_model("resnet18", pretrained_cfg_overlay=dict(crop_pct=0.9, my_key="x"))
    cfg, default = model.pretrained_cfg, model.default_cfg
    _check_mapping(cfg, "resnet18")
    assert default == cfg
    assert default["input_size"] == (3, 224, 224) and cfg.get("mean") == (0.485, 0.456, 0.406)
    assert cfg["crop_pct"] == 0.9 == cfg.crop_pct and cfg["my_key"] == "x" and "my_key" in cfg.keys()
    assert cfg == {**dict(visionzoo.get_pretrained_cfg("resnet18")), "crop_pct": 0.9, "my_key": "x"}
    assert "pool_size" in cfg and "test_input_size" not in cfg or cfg.test_input_size is not None
    # MutableMapping: set / delete / update / pop
    d = copy.deepcopy(cfg)
    d["num_classes"] = 10
    assert d.num_classes == 10 and d["num_classes"] == 10 and cfg["num_classes"] == 1000
    d["input_size"] = [3, 160, 160]
    assert d.input_size == (3, 160, 160)
    d.update(new_key=1)
    assert d["new_key"] == 1 and d.extra["new_key"] == 1
    assert d.pop("url") == cfg["url"] and "url" not in d and d.url is None
    del d["new_key"]
    assert "new_key" not in d
    with pytest.raises(KeyError):
        del d["no_such_key"]
    # round trips
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert visionzoo.PretrainedCfg.from_dict(dict(cfg)) == cfg
    # a dict given as pretrained_cfg is merged over the default and read back as a mapping
    with torch.device("meta"):
        m2 = visionzoo.create_model("resnet18", pretrained_cfg=dict(input_size=(3, 256, 256)))
    assert m2.default_cfg["input_size"] == (3, 256, 256) and m2.default_cfg["classifier"] == "fc"
    # a ViT keeps the reference's explicit ``pool_size: None`` key
    vit = next((a for a in ARCHS if registry.get_model_module(a) == "vision_transformer"), None)
    if vit is not None:
        assert "pool_size" in visionzoo.get_pretrained_cfg(vit) and visionzoo.get_pretrained_cfg(vit)["pool_size"] is None


# -- every architecture: unpooled output size, frozen batch norm keys ------------------------------

# value-filling tensor ops: no-ops on meta tensors (they have no values); the meta-device init of
# every architecture otherwise dominates this module's time
_INIT_OPS = ("normal_", "uniform_", "zero_", "fill_", "erfinv_", "clamp_", "mul_", "add_", "copy_", "div_", "sub_",
             "exponential_", "bernoulli_", "log_normal_", "random_")
# shape-preserving functions, replaced by the identity during the shape-only forward
_SAME_SHAPE = ("batch_norm", "layer_norm", "group_norm", "relu", "relu6", "silu", "gelu", "hardswish",
               "hardsigmoid", "sigmoid", "mish", "elu", "leaky_relu", "hardtanh", "dropout", "tanh")
_SAME_SHAPE_TORCH = ("sigmoid", "tanh", "rsqrt", "relu")


@contextlib.contextmanager
def _meta_build():
    saved = {op: getattr(torch.Tensor, op) for op in _INIT_OPS}

    def skip_on_meta(orig):
        def op(self, *args, **kwargs):
            return self if self.is_meta else orig(self, *args, **kwargs)
        return op

    try:
        for op, orig in saved.items():
            setattr(torch.Tensor, op, skip_on_meta(orig))
        with torch.device("meta"):
            yield
    finally:
        for op, orig in saved.items():
            setattr(torch.Tensor, op, orig)


def _conv2d_shape(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d``'s output on meta tensors from the convolution size formula alone."""
    assert x.is_meta and x.shape[-3] == weight.shape[1] * groups, (tuple(x.shape), tuple(weight.shape), groups)
    two = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    (sh, sw), (dh, dw), (kh, kw) = two(stride), two(dilation), weight.shape[-2:]
    if padding == "same":
        return x.new_empty((*x.shape[:-3], weight.shape[0], *x.shape[-2:]))
    ph, pw = (0, 0) if padding == "valid" else two(padding)
    size = ((x.shape[-2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (x.shape[-1] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    return x.new_empty((*x.shape[:-3], weight.shape[0], *size))


_BINARY = ("__add__", "__radd__", "__mul__", "__rmul__", "__sub__", "__rsub__", "__truediv__")


@contextlib.contextmanager
def _shapes_only():
    """Shape propagation with the meta device's per-op Python overhead cut: shape-preserving
    functions (norms, activations, dropout) pass their input through, convolutions compute their
    output size by formula, and elementwise arithmetic between meta tensors broadcasts shapes."""
    saved = {name: getattr(F, name) for name in (*_SAME_SHAPE, "conv2d")}
    saved_torch = {name: getattr(torch, name) for name in _SAME_SHAPE_TORCH}
    saved_ops = {op: getattr(torch.Tensor, op) for op in _BINARY}

    def same(x, *args, **kwargs):
        return x

    def broadcast(orig):
        def op(self, other):
            if self.is_meta and self.is_floating_point():
                if isinstance(other, (int, float)) and not isinstance(other, bool):
                    return self.new_empty(self.shape)
                if isinstance(other, torch.Tensor) and other.is_meta and self.dtype == other.dtype:
                    return self.new_empty(torch.broadcast_shapes(self.shape, other.shape))
            return orig(self, other)
        return op

    try:
        for name in _SAME_SHAPE:
            setattr(F, name, same)
        for name in _SAME_SHAPE_TORCH:
            setattr(torch, name, same)
        F.conv2d = _conv2d_shape
        for op, orig in saved_ops.items():
            setattr(torch.Tensor, op, broadcast(orig))
        yield
    finally:
        for name, fn in saved.items():
            setattr(F, name, fn)
        for name, fn in saved_torch.items():
            setattr(torch, name, fn)
        for op, orig in saved_ops.items():
            setattr(torch.Tensor, op, orig)


def _spatial(y: torch.Tensor, model: nn.Module) -> tuple[int, int]:
    return tuple(y.shape[1:3]) if getattr(model, "output_fmt", "NCHW") == "NHWC" else tuple(y.shape[-2:])


def _bn_types(model: nn.Module) -> dict[str, type]:
    return {n: type(m) for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))}


def _pooled_archs(family: str) -> list[str]:
    """The family's architectures whose default cfg gives a ``pool_size`` (ViTs give ``None``)."""
    return [a for a in visionzoo.list_models(module=family)
            if (visionzoo.get_pretrained_cfg(a) or {}).get("pool_size") is not None]


# the reference's cfg keeps the 224-px pool_size (7, 7) for the Florence-2 DaViT towers run at 768 px
# (the cfg JSON must equal the reference's); their real unpooled map is 768 / 32 = 24
POOL_SIZE_EXCEPTIONS = {"davit_base_fl": (24, 24), "davit_huge_fl": (24, 24)}


@pytest.mark.parametrize("family", FAMILIES)
def test_unpooled_output_has_pool_size_every_arch(family: str):
    """Every architecture with a ``pool_size``, built on meta: after ``reset_classifier(0, '')`` the
    output's spatial size is ``pretrained_cfg['pool_size']`` at the cfg's ``input_size``. The first
    architecture with batch norms of each family also round-trips freeze / unfreeze on meta."""
    archs = _pooled_archs(family)
    if not archs:
        pytest.skip(f"no {family} architecture has a pool_size (token models)")
    froze = False
    for name in archs:
        cfg = visionzoo.get_pretrained_cfg(name)
        with _meta_build():
            model = visionzoo.create_model(name)
        model.eval()
        assert model.pretrained_cfg == cfg and model.default_cfg["pool_size"] == cfg["pool_size"], name
        bns = _bn_types(model)
        if bns and not froze:  # same state_dict entries; every BN converted and restored to its class
            froze = True
            keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
            with _meta_build():
                freeze_batch_norm_2d(model)
            assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == keys, name
            assert all(isinstance(model.get_submodule(n), FrozenBatchNormAct2d if issubclass(t, BatchNormAct2d)
                                  else FrozenBatchNorm2d) for n, t in bns.items()), name
            with _meta_build():
                unfreeze_batch_norm_2d(model)
            assert _bn_types(model) == bns and [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == keys
        model.reset_classifier(0, "")
        x = torch.empty(1, *cfg["input_size"], device="meta")
        with torch.no_grad(), _shapes_only():
            y = model(x)
        expected = POOL_SIZE_EXCEPTIONS.get(name, tuple(cfg["pool_size"]))
        assert y.ndim == 4 and _spatial(y, model) == expected, \
            f"{name}: unpooled output {tuple(y.shape)}, pretrained_cfg['pool_size'] = {cfg['pool_size']}"


# -- freeze / unfreeze on real weights -------------------------------------------------------------

def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["resnet10t", "mobilenetv3_small_050"])  # BatchNorm2d / BatchNormAct2d
def test_freeze_round_trip_keeps_state_and_outputs(name: str):
    torch.manual_seed(0)
    model = visionzoo.create_model(name, num_classes=5).eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 64, 64)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
    trainable = sum(p.numel() for p in model.parameters())
    bn_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert bn_params > 0
    assert freeze_batch_norm_2d(model) is model
    assert sum(p.numel() for p in model.parameters()) == trainable - bn_params  # frozen: buffers only
    assert list(model.state_dict()) == list(sd)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    model.train()  # frozen layers ignore train mode: no batch statistics, no running-stat updates
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    # a state_dict saved from the unfrozen model (and one without the step counters) loads strictly
    model.load_state_dict(sd)
    model.load_state_dict({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")})
    unfreeze_batch_norm_2d(model)
    assert all(not isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert sum(p.numel() for p in model.parameters()) == trainable
    assert list(model.state_dict()) == list(sd) and all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


def test_freeze_single_layers():
    bn = nn.BatchNorm2d(4)
    frozen = freeze_batch_norm_2d(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and list(frozen.state_dict()) == list(bn.state_dict())
    assert type(unfreeze_batch_norm_2d(frozen)) is nn.BatchNorm2d
    sync = freeze_batch_norm_2d(nn.SyncBatchNorm(4))
    assert type(unfreeze_batch_norm_2d(sync)) is nn.BatchNorm2d
    plain = nn.BatchNorm2d(4, affine=False)
    frozen = freeze_batch_norm_2d(plain)
    assert list(frozen.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(frozen(x), plain.eval()(x))
    no_stats = nn.BatchNorm2d(4, track_running_stats=False)
    assert freeze_batch_norm_2d(no_stats) is no_stats  # nothing to freeze at
    act = BatchNormAct2d(4, act_layer=nn.ReLU)
    frozen_act = freeze_batch_norm_2d(act)
    assert isinstance(frozen_act, FrozenBatchNormAct2d)
    torch.testing.assert_close(frozen_act(x), act.eval()(x))
    assert type(unfreeze_batch_norm_2d(frozen_act)) is BatchNormAct2d


# -- list / filter keywords and registry helpers ---------------------------------------------------

@pytest.fixture
def user_models():
    """Two user models: one without any cfg, one whose cfg is another architecture's (an alias)."""
    def plain(pretrained=False, **kwargs):
        return nn.Linear(2, 2)

    def alias(pretrained=False, **kwargs):
        return nn.Linear(2, 2)

    visionzoo.register_model(plain, name="compat_plain_net", module="compat_user")
    visionzoo.register_model(alias, name="compat_alias_net", module="compat_user",
                             pretrained_cfgs={"t": dict(architecture="compat_plain_net", url="https://x/y.pth")})
    try:
        yield
    finally:
        with registry._lock:
            for arch in ("compat_plain_net", "compat_alias_net"):
                registry._entrypoints.pop(arch, None)
                registry._model_module.pop(arch, None)
                registry._runtime_cfgs.pop(arch, None)


def test_list_models_keywords(user_models):
    import fnmatch

    every = visionzoo.list_models()
    assert every == sorted(set(every), key=registry._natural_key) and "compat_plain_net" in every
    resnets = visionzoo.list_models("resnet1*")
    assert resnets and all(fnmatch.fnmatchcase(n, "resnet1*") for n in resnets)
    assert set(visionzoo.list_models(["resnet18", "vgg11"])) == {"resnet18", "vgg11"}
    for family in ("vgg", "densenet"):
        members = visionzoo.list_models(module=family)
        assert members and all(registry.get_model_module(n) == family for n in members)
        assert all(registry.is_model_in_modules(n, family) for n in members)
    assert set(visionzoo.list_models(module=["vgg", "densenet"])) == \
        set(visionzoo.list_models(module="vgg")) | set(visionzoo.list_models(module="densenet"))
    no_bn = visionzoo.list_models("vgg*", exclude_filters="*_bn")
    assert no_bn and not any(n.endswith("_bn") for n in no_bn)
    assert visionzoo.list_models("vgg*", exclude_filters=["*_bn", "vgg1[13]"]) == ["vgg16", "vgg19"]
    # pretrained / include_tags
    pre = visionzoo.list_models(pretrained=True, include_tags=False)
    assert pre and set(pre) <= set(every) and all(visionzoo.is_model_pretrained(n) for n in pre)
    assert not visionzoo.is_model_pretrained("compat_plain_net")
    tagged = visionzoo.list_models(pretrained=True)  # include_tags defaults to pretrained
    assert tagged and all("." in n and visionzoo.is_model_pretrained(n) for n in tagged)
    assert {registry.get_arch_name(n) for n in tagged} == set(pre)
    all_tags = visionzoo.list_models(include_tags=True)
    assert set(tagged) <= set(all_tags) and len(all_tags) >= len(every) - 1  # compat_plain_net has no cfg
    assert "compat_alias_net.t" in tagged
    # name_matches_cfg: names with a cfg of their own (not the user model without a cfg, not the alias)
    matching = visionzoo.list_models(name_matches_cfg=True)
    assert set(every) - set(matching) == {"compat_plain_net", "compat_alias_net"}
    assert "compat_alias_net.t" not in visionzoo.list_models(pretrained=True, name_matches_cfg=True)
    # list_pretrained(filter, exclude_filters)
    assert visionzoo.list_pretrained("resnet18*") == visionzoo.list_models("resnet18*", pretrained=True,
                                                                          include_tags=True)
    assert all(not n.startswith("resnet18.") for n in visionzoo.list_pretrained("resnet1*", exclude_filters="resnet18"))
    assert visionzoo.list_pretrained("*.a1_in1k") and all(n.endswith(".a1_in1k") for n in visionzoo.list_pretrained("*.a1_in1k"))
    mods = visionzoo.list_modules()
    assert mods == sorted(mods) and {"resnet", "vgg", "compat_user"} <= set(mods)


def test_registry_helpers():
    assert visionzoo.is_model("resnet18") and visionzoo.is_model("resnet18.a1_in1k") and not visionzoo.is_model("nope")
    fn = visionzoo.model_entrypoint("resnet18")
    assert callable(fn) and visionzoo.model_entrypoint("resnet18", module_filter="resnet") is fn
    with pytest.raises(RuntimeError, match="not in module"):
        visionzoo.model_entrypoint("resnet18", module_filter="vgg")
    with pytest.raises(RuntimeError, match="resnet18"):
        visionzoo.model_entrypoint("resnet19")
    for exc in (RuntimeError, ValueError):  # the reference raises RuntimeError, visionzoo ValueError
        with pytest.raises(exc, match="available tags"):
            visionzoo.get_pretrained_cfg("resnet18.no_such_tag")
    assert visionzoo.split_model_name_tag("resnet18.a1_in1k") == ("resnet18", "a1_in1k")
    assert visionzoo.get_pretrained_cfg_value("resnet18.a1_in1k", "crop_pct") == \
        visionzoo.get_pretrained_cfg("resnet18.a1_in1k").crop_pct
    # the reference's module paths
    from visionzoo.data import create_transform, resolve_data_config  # noqa: F401
    from visionzoo.layers import freeze_batch_norm_2d as fb, set_layer_config as slc  # noqa: F401
    from visionzoo.models import get_pretrained_cfg, load_checkpoint, resume_checkpoint  # noqa: F401


# the reference's documented parameter lists (leading parameters, in order) and defaults
SIGNATURES = {
    "create_model": (["model_name", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                      "cache_dir", "scriptable", "exportable", "no_jit"], {"pretrained": False}),
    "list_models": (["filter", "module", "pretrained", "exclude_filters", "name_matches_cfg", "include_tags"],
                    {"filter": "", "module": "", "pretrained": False, "exclude_filters": "",
                     "name_matches_cfg": False, "include_tags": None}),
    "list_pretrained": (["filter", "exclude_filters"], {"filter": "", "exclude_filters": ""}),
    "list_modules": ([], {}),
    "is_model": (["model_name"], {}),
    "model_entrypoint": (["model_name", "module_filter"], {"module_filter": None}),
    "get_pretrained_cfg": (["model_name", "allow_unregistered"], {"allow_unregistered": True}),
    "get_pretrained_cfg_value": (["model_name", "cfg_key"], {}),
    "load_checkpoint": (["model", "checkpoint_path", "use_ema", "device", "strict", "remap", "filter_fn"],
                        {"use_ema": True, "device": "cpu", "strict": True, "remap": False, "filter_fn": None}),
    "resume_checkpoint": (["model", "checkpoint_path", "optimizer", "loss_scaler", "log_info"],
                          {"optimizer": None, "loss_scaler": None, "log_info": True}),
    "set_layer_config": (["scriptable", "exportable", "no_jit", "no_activation_jit"],
                         {"scriptable": None, "exportable": None, "no_jit": None, "no_activation_jit": None}),
    "set_scriptable": (["mode"], {}),
    "set_exportable": (["mode"], {}),
    "set_no_jit": (["mode"], {}),
    "resolve_data_config": (["args", "pretrained_cfg", "model", "use_test_size", "verbose"],
                            {"args": None, "pretrained_cfg": None, "model": None, "use_test_size": False,
                             "verbose": False}),
    "resolve_model_data_config": (["model", "args", "pretrained_cfg", "use_test_size", "verbose"],
                                  {"args": None, "pretrained_cfg": None, "use_test_size": False, "verbose": False}),
    "create_transform": (["input_size", "is_training", "no_aug"], {"is_training": False, "no_aug": False}),
    "freeze_batch_norm_2d": (["module"], {}),
    "unfreeze_batch_norm_2d": (["module"], {}),
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_reference_signatures(name: str):
    expected, defaults = SIGNATURES[name]
    params = list(inspect.signature(getattr(visionzoo, name)).parameters.values())
    names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
    assert names[: len(expected)] == expected
    for key, value in defaults.items():
        assert inspect.signature(getattr(visionzoo, name)).parameters[key].default == value, key


# -- layer flags -----------------------------------------------------------------------------------

@pytest.fixture
def restore_flags():
    saved = dict(layer_config._FLAGS)
    yield
    layer_config._FLAGS.clear()
    layer_config._FLAGS.update(saved)


def test_layer_flags_apply_on_call_and_scope_in_with(restore_flags):
    assert not (visionzoo.is_scriptable() or visionzoo.is_exportable() or visionzoo.is_no_jit())
    for setter, getter in ((visionzoo.set_scriptable, visionzoo.is_scriptable),
                           (visionzoo.set_exportable, visionzoo.is_exportable),
                           (visionzoo.set_no_jit, visionzoo.is_no_jit)):
        with setter(True):
            assert getter()
        assert not getter()
        setter(True)  # a plain call sets the flag, as in the reference
        assert getter()
        setter(False)
        assert not getter()
    with visionzoo.set_layer_config(scriptable=True, exportable=True, no_jit=True, no_activation_jit=True):
        assert visionzoo.is_scriptable() and visionzoo.is_exportable() and visionzoo.is_no_jit()
        with visionzoo.set_layer_config(exportable=False):  # None leaves the others alone
            assert visionzoo.is_scriptable() and not visionzoo.is_exportable()
        assert visionzoo.is_exportable()
    assert not (visionzoo.is_scriptable() or visionzoo.is_exportable() or visionzoo.is_no_jit())
    visionzoo.set_layer_config(exportable=True)
    assert visionzoo.is_exportable() and not layer_config.use_fused_attn()


# -- checkpoints -----------------------------------------------------------------------------------

def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _sd(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in _tiny().state_dict().items()}


def _same(model: nn.Module, sd: dict) -> bool:
    return all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


class _Scaler:
    state_dict_key = "amp_scaler"

    def __init__(self):
        self.loaded = None

    def load_state_dict(self, sd):
        self.loaded = sd


def test_load_checkpoint(tmp_path):
    raw, ema = _sd(1), _sd(2)
    path = tmp_path / "train.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in raw.items()}, "state_dict_ema": ema, "epoch": 3}, path)
    model = _tiny()
    result = visionzoo.load_checkpoint(model, path)  # use_ema=True: the EMA weights, as the reference
    assert _same(model, ema) and list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    visionzoo.load_checkpoint(model, path, use_ema=False, device="cpu")
    assert _same(model, raw)
    # plain state_dict; filter_fn(state_dict, model); remap by order
    plain = tmp_path / "plain.pth"
    torch.save(ema, plain)
    visionzoo.load_checkpoint(model, plain, filter_fn=lambda sd, m: {k: v * 0 if k == "5.bias" else v
                                                                       for k, v in sd.items()})
    assert torch.equal(model[5].bias, torch.zeros(2)) and torch.equal(model[0].weight, ema["0.weight"])
    renamed = tmp_path / "renamed.pth"
    torch.save({f"p{i}": v for i, v in enumerate(raw.values())}, renamed)
    with pytest.raises(CheckpointError):
        visionzoo.load_checkpoint(model, renamed)
    visionzoo.load_checkpoint(model, renamed, remap=True)
    assert _same(model, raw)
    # strict=False reports what did not fit
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in ema.items() if not k.startswith("5.")}, partial)
    with pytest.raises(CheckpointError, match="missing"):
        visionzoo.load_checkpoint(model, partial)
    result = visionzoo.load_checkpoint(model, partial, strict=False)
    assert sorted(result.missing_keys) == ["5.bias", "5.weight"] and torch.equal(model[0].weight, ema["0.weight"])


def test_resume_checkpoint(tmp_path):
    raw = _sd(3)
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    saved_opt = torch.optim.SGD(_tiny().parameters(), lr=0.125, momentum=0.9).state_dict()
    scaler = _Scaler()
    path = tmp_path / "ref.pth"
    torch.save({"state_dict": raw, "optimizer": saved_opt, "amp_scaler": {"scale": 8.0}, "epoch": 4, "version": 2},
               path)
    assert visionzoo.resume_checkpoint(model, path, optimizer=opt, loss_scaler=scaler, log_info=False) == 5
    assert _same(model, raw) and opt.param_groups[0]["lr"] == 0.125 and scaler.loaded == {"scale": 8.0}
    old = tmp_path / "v1.pth"
    torch.save({"state_dict": raw, "epoch": 4}, old)  # no version: the epoch to resume at
    assert visionzoo.resume_checkpoint(_tiny(), old, log_info=False) == 4
    ours = tmp_path / "vz.pth"  # visionzoo.train checkpoints hold the last completed epoch
    torch.save({"state_dict": raw, "optimizer": saved_opt, "scaler": {"scale": 2.0}, "epoch": 1,
                "format": "visionzoo.train/1"}, ours)
    scaler = _Scaler()
    scaler.state_dict_key = "scaler"
    assert visionzoo.resume_checkpoint(_tiny(), ours, optimizer=opt, loss_scaler=scaler, log_info=False) == 2
    assert scaler.loaded == {"scale": 2.0}
    weights = tmp_path / "weights.pth"
    torch.save(raw, weights)
    fresh = _tiny()
    assert visionzoo.resume_checkpoint(fresh, weights, log_info=False) is None and _same(fresh, raw)


# -- data config and transforms --------------------------------------------------------------------

def test_data_config_helpers(capsys):
    with torch.device("meta"):
        model = visionzoo.create_model("resnet18")
    cfg = visionzoo.resolve_model_data_config(model)
    assert cfg == visionzoo.resolve_data_config(model=model) == visionzoo.resolve_data_config({}, model=model)
    assert cfg["input_size"] == model.pretrained_cfg["input_size"] and cfg["mean"] == model.default_cfg["mean"]
    other = visionzoo.get_pretrained_cfg("resnet18.a1_in1k")
    assert visionzoo.resolve_model_data_config(model, pretrained_cfg=dict(other))["crop_pct"] == other["crop_pct"]
    assert visionzoo.resolve_model_data_config(model, pretrained_cfg=other, use_test_size=True)["input_size"] == \
        other.get("test_input_size", other["input_size"])
    ns = argparse.Namespace(input_size=None, img_size=160, crop_pct=None, mean=None, std=None)
    assert visionzoo.resolve_data_config(ns, model=model)["input_size"] == (3, 160, 160)
    visionzoo.resolve_model_data_config(model, verbose=True)
    assert "input_size" in capsys.readouterr().out


def test_create_transform_reference_keywords():
    from PIL import Image

    img = Image.new("RGB", (80, 60), (120, 30, 200))
    kw = dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    default_crop = visionzoo.create_transform(**kw, crop_pct=None, crop_mode=None)(img)
    assert torch.equal(default_crop, visionzoo.create_transform(**kw, crop_pct=0.875, crop_mode="center")(img))
    no_aug = visionzoo.create_transform(**kw, is_training=True, no_aug=True)
    assert torch.equal(no_aug(img), visionzoo.create_transform(**kw, crop_pct=1.0)(img))
    train = visionzoo.create_transform(**kw, is_training=True, scale=None, ratio=None, auto_augment="rand-m9",
                                       re_prob=0.25)
    assert train(img).shape == (3, 32, 32)
