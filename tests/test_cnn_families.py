"""Family behaviour of RegNet, VoVNet, DenseNet and VGG beyond the fixture conformance checks."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import visionzoo
from visionzoo.models.regnet import VARIANTS, generate_regnet, regnet_stage_params

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))

# small representatives of each block type; VGG with a narrow pre-logits MLP to stay light
MODELS = {
    "regnetx_002": {},
    "regnety_002": {},
    "regnetz_005": {},
    "regnetv_064": {},
    "regnety_040_sgn": {},
    "ese_vovnet19b_slim_dw": {},
    "ese_vovnet39b_evos": {},
    "eca_vovnet39b": {},
    "densenet121": {},
    "densenetblur121d": {},
    "vgg11_bn": dict(hidden_size=64),
}
PARAMS = [pytest.param(n, kw, id=n) for n, kw in MODELS.items()]
CKPT_PARAMS = [p for p in PARAMS if p.id in ("regnetx_002", "regnetz_005", "ese_vovnet19b_slim_dw", "densenet121",
                                             "vgg11_bn")]


def _create(name: str, kw: dict, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return visionzoo.create_model(name, **kw, **extra)


@pytest.mark.parametrize("name,kw", PARAMS)
def test_features_only_subset(name: str, kw: dict) -> None:
    model = _create(name, kw).eval()
    fmodel = _create(name, kw, features_only=True, out_indices=(1, 3)).eval()
    full_sd = model.state_dict()
    # wrapper key -> the model's key of the same tensor (flatten_sequential families rename)
    names = {id(t): k for k, t in fmodel.model.state_dict(keep_vars=True).items()}
    own = {k: names[id(t)] for k, t in fmodel.state_dict(keep_vars=True).items()}
    assert set(own.values()) < set(full_sd), "features_only keeps a strict subset of the keys"
    fmodel.load_state_dict({k: full_sd[m] for k, m in own.items()})
    with torch.no_grad():
        final, maps = model.forward_intermediates(X)
        torch.testing.assert_close(final, model.forward_features(X))
        fmaps = fmodel(X)
    assert len(maps) == len(model.feature_info) and len(fmaps) == 2
    for got, i in zip(fmaps, (1, 3)):
        torch.testing.assert_close(got, maps[i])
        info = model.feature_info[i]
        assert got.shape[1:] == (info["num_chs"], 64 // info["reduction"], 64 // info["reduction"])
    assert fmodel.feature_info.channels() == [model.feature_info[i]["num_chs"] for i in (1, 3)]


@pytest.mark.parametrize("name,kw", PARAMS)
def test_reset_classifier(name: str, kw: dict) -> None:
    model = _create(name, kw).eval()
    with torch.no_grad():
        model.reset_classifier(7)
        assert model(X).shape == (2, 7)
        assert model.get_classifier().out_features == 7
        model.reset_classifier(0)
        assert model(X).shape == (2, model.head_hidden_size)
        model.reset_classifier(0, "")
        assert model(X).ndim == 4


@pytest.mark.parametrize("name,kw", CKPT_PARAMS)
def test_grad_checkpointing_same_output_and_grads(name: str, kw: dict) -> None:
    x = X[:, :, :32, :32]
    model = _create(name, kw, num_classes=5).train()
    for m in model.modules():  # BN in train mode still updates stats: run both passes from the same state
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    ref = model(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for g, r in zip((p.grad for p in model.parameters()), ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_densenet_memory_efficient_matches() -> None:
    x = X[:, :, :32, :32].clone().requires_grad_(True)
    outs, grads = [], []
    for mem in (False, True):
        model = _create("densenet121", {}, memory_efficient=mem, num_classes=3).eval()
        out = model(x)
        out.sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["regnetx_002", "regnetv_040", "ese_vovnet19b_dw", "densenet121", "vgg11"])
def test_in_chans_and_num_classes_from_saved_checkpoint(name: str, tmp_path: Path) -> None:
    kw = dict(hidden_size=64) if name.startswith("vgg") else {}
    src = _create(name, kw).eval()
    for m in src.modules():  # non-trivial BN statistics, so a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{name}.pth"
    torch.save(src.state_dict(), path)
    overlay = dict(file=str(path))
    gray = visionzoo.create_model(name, pretrained=True, in_chans=1, pretrained_cfg_overlay=overlay, **kw).eval()
    first = src.pretrained_cfg.first_conv + ".weight"
    torch.testing.assert_close(gray.state_dict()[first], src.state_dict()[first].sum(1, keepdim=True))
    x1 = X[:, :1]
    with torch.no_grad():  # summed RGB filters on a gray image == RGB filters on the replicated image
        torch.testing.assert_close(gray(x1), src(x1.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
    ten = visionzoo.create_model(name, pretrained=True, num_classes=10, pretrained_cfg_overlay=overlay, **kw).eval()
    assert ten.get_classifier().out_features == 10
    with torch.no_grad():
        torch.testing.assert_close(ten.forward_features(X), src.forward_features(X))


def test_regnet_width_rule() -> None:
    # RegNetX-200MF from the paper: widths 24, 56, 152, 368 with depths 1, 1, 4, 7
    widths = generate_regnet(24, 36.44, 2.49, 13)
    assert sorted(set(widths)) == [24, 56, 152, 368]
    assert [d for d, *_ in regnet_stage_params(VARIANTS["regnetx_002"].args["cfg"])] == [1, 1, 4, 7]
    # torchvision rounding moves 384 -> 400 for RegNetX-400MF
    assert regnet_stage_params(VARIANTS["regnetx_004"].args["cfg"])[-1][1] == 384
    assert regnet_stage_params(VARIANTS["regnetx_004_tv"].args["cfg"])[-1][1] == 400
    with pytest.raises(ValueError):
        generate_regnet(20, 10.0, 0.5, 10)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_regnet_output_stride(output_stride: int) -> None:
    model = _create("regnety_002", {}, output_stride=output_stride).eval()
    with torch.no_grad():
        maps = model.forward_intermediates(X, intermediates_only=True)
        assert model(X).shape == (2, 1000)
    assert [f["reduction"] for f in model.feature_info] == [min(r, output_stride) for r in (2, 4, 8, 16, 32)]
    assert [m.shape[-1] for m in maps] == [64 // f["reduction"] for f in model.feature_info]


def test_drop_path_train_mode() -> None:
    for name, kw in (("regnety_002", dict(zero_init_last=False)), ("ese_vovnet39b", {})):
        model = _create(name, kw, drop_path_rate=0.5).train()
        x = torch.randn(8, 3, 32, 32)  # per-sample masks: many samples make equal draws unlikely
        assert not torch.allclose(model(x), model(x)), name


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        visionzoo.create_model("vgg11", output_stride=16)
    with pytest.raises(TypeError):
        visionzoo.create_model("regnetx_002", not_an_option=1)


def test_meta_device_build() -> None:
    with torch.device("meta"):
        for name in ("regnety_1280", "regnetv_064", "ese_vovnet99b", "densenet264d", "vgg19_bn"):
            model = visionzoo.create_model(name)
            assert next(model.parameters()).device.type == "meta"
