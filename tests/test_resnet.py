"""Family-specific behaviour of ResNet / ResNetV2 beyond the fixture conformance checks."""
from __future__ import annotations

import copy

import pytest
import torch

import visionzoo
from visionzoo.features import FeatureListNet
from visionzoo.layers.blur_pool import BlurPool2d
from visionzoo.models.resnet import ResNet
from visionzoo.models.resnetv2 import ResNetV2
from visionzoo.layers.norm_act import EvoNorm2dS0, FilterResponseNormTlu2d
from visionzoo.layers.std_conv import StdConv2d, standardize_weight

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
_TINY = dict(layers=(1, 1, 1, 1), channels=(16, 24, 32, 48))


def tiny_resnet(**kwargs) -> ResNet:
    """A few-thousand-parameter ResNet-D (named variants are too slow to init for unit tests)."""
    return ResNet(**{**_TINY, "block": "basic", "stem_width": 8, "stem_type": "deep", "avg_down": True, **kwargs})


def tiny_resnetv2(**kwargs) -> ResNetV2:
    return ResNetV2(**{**_TINY, "basic": True, "bottle_ratio": 1.0, "stem_chs": 16, "stem_type": "deep",
                       "avg_down": True, **kwargs})


_BUILD = {"resnet": tiny_resnet, "resnetv2": tiny_resnetv2}


@pytest.mark.parametrize("name", ["test_resnet", "resnetv2"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride_dilates(name: str, output_stride: int) -> None:
    if name in _BUILD:
        model = _BUILD[name](output_stride=output_stride, num_classes=7).eval()
    else:
        model = visionzoo.create_model(name, output_stride=output_stride, num_classes=7).eval()
    with torch.no_grad():
        feats = model.forward_features(X)
        maps = model.forward_intermediates(X, intermediates_only=True)
    assert feats.shape[-1] == 64 // output_stride
    assert [f["reduction"] for f in model.feature_info] == [min(r, output_stride) for r in (2, 4, 8, 16, 32)]
    assert [m.shape[-1] for m in maps] == [64 // f["reduction"] for f in model.feature_info]
    assert model(X).shape == (2, 7)


@pytest.mark.parametrize("aa", ["avg", "blur"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_anti_aliased_dilated(aa: str, block: str) -> None:
    model = tiny_resnet(aa_layer=aa, block=block, output_stride=16, num_classes=0).eval()
    with torch.no_grad():
        assert model.forward_features(X).shape == (2, model.num_features, 4, 4)


def test_drop_path_and_drop_block_train_mode() -> None:
    torch.manual_seed(0)
    model = visionzoo.create_model("test_resnet", drop_path_rate=0.5, drop_block_rate=0.5, drop_rate=0.2,
                                   zero_init_last=False)
    model.train()
    a, b = model(X), model(X)
    assert not torch.allclose(a, b), "stochastic regularisers should change train-mode outputs"
    a.sum().backward()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(X), model(X))


def test_resnetv2_drop_path_train_mode() -> None:
    torch.manual_seed(0)
    model = tiny_resnetv2(drop_path_rate=0.5, zero_init_last=False).train()
    assert not torch.allclose(model(X), model(X))


@pytest.mark.parametrize("name", ["resnet", "resnetv2"])
def test_grad_checkpointing_same_output_and_grads(name: str) -> None:
    torch.manual_seed(0)
    model = _BUILD[name](num_classes=5)
    model.train()
    for m in model.modules():  # BN in train mode still updates stats: run both passes from the same state
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0
    ref = model(X)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(X)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for g, r in zip((p.grad for p in model.parameters()), ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["test_resnet", "resnetv2"])
def test_intermediates_and_features_only(name: str) -> None:
    if name in _BUILD:
        model = _BUILD[name]().eval()
        fmodel = FeatureListNet(copy.deepcopy(model), (1, 3)).eval()
    else:
        model = visionzoo.create_model(name).eval()
        fmodel = visionzoo.create_model(name, features_only=True, out_indices=(1, 3)).eval()
        fmodel.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        final, maps = model.forward_intermediates(X)
        torch.testing.assert_close(final, model.forward_features(X))
        fmaps = fmodel(X)
    assert len(maps) == 5 and len(fmaps) == 2
    torch.testing.assert_close(fmaps[0], maps[1])
    torch.testing.assert_close(fmaps[1], maps[3])
    assert fmodel.feature_info.channels() == [model.feature_info[i]["num_chs"] for i in (1, 3)]


def test_resnetv2_norm_applies_to_last_level() -> None:
    model = tiny_resnetv2().eval()
    with torch.no_grad():
        raw = model.forward_intermediates(X, indices=[4], intermediates_only=True)[0]
        normed = model.forward_intermediates(X, indices=[4], norm=True, intermediates_only=True)[0]
        torch.testing.assert_close(normed, model.norm(raw))
        torch.testing.assert_close(normed, model.forward_features(X))


def test_pruned_widths_and_pool_variants() -> None:
    widths = (((8, 6, 20),), ((10, 12, 24), (9, 7, 24)), ((11, 5, 30),), ((12, 13, 40),))
    model = tiny_resnet(block="bottleneck", layers=(1, 2, 1, 1), block_widths=widths, attn_layer="eca",
                        global_pool="catavgmax", num_classes=3).eval()
    with torch.no_grad():
        assert model(X[:1]).shape == (1, 3)
    assert model.num_features == 40
    assert [f["num_chs"] for f in model.feature_info] == [16, 20, 24, 30, 40]
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(X[:1]).shape == (1, 2 * 40)


def test_blur_pool_preserves_constants_and_halves() -> None:
    pool = BlurPool2d(4)
    y = pool(torch.full((1, 4, 9, 9), 3.0))
    assert y.shape == (1, 4, 5, 5)
    torch.testing.assert_close(y, torch.full_like(y, 3.0))
    assert "filt" not in pool.state_dict()


def test_std_conv_standardises_filters() -> None:
    conv = StdConv2d(3, 8, 3, eps=1e-8)
    w = standardize_weight(conv.weight, 1e-8).reshape(8, -1)
    torch.testing.assert_close(w.mean(1), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.var(1, unbiased=False), torch.ones(8), atol=1e-4, rtol=0)
    # invariant to a per-filter affine rescale of the stored weight
    x = torch.randn(1, 3, 8, 8)
    ref = conv(x)
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.5)
    torch.testing.assert_close(conv(x), ref, rtol=1e-4, atol=1e-4)


def test_sample_wise_norms_batch_independent() -> None:
    x = torch.randn(4, 64, 5, 5)
    for norm in (EvoNorm2dS0(64), FilterResponseNormTlu2d(64)):
        torch.testing.assert_close(norm(x)[:1], norm(x[:1]))


def test_meta_device_build() -> None:
    with torch.device("meta"):
        for name in ("resnetblur18", "resnetv2_50x1_bit", "resnetv2_50d_evos"):
            model = visionzoo.create_model(name)
            assert next(model.parameters()).device.type == "meta"


@pytest.mark.parametrize("name", ["resnet", "resnetv2"])
def test_torchscript(name: str) -> None:
    model = _BUILD[name](aa_layer="blur", attn_layer="se") if name == "resnet" else _BUILD[name](norm_layer="frn")
    model.eval()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(X), model(X))
