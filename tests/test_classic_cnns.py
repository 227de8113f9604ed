"""Classic CNN families (issue 18): SENet (legacy layout), Res2Net, ResNeSt, SKNet, TResNet, DLA.

The split-attention and selective-kernel convs are checked for what they compute; the families for
the interface (head reset, pooling, in_chans/num_classes, features, intermediates) on the meta
device, and gradient checkpointing on a small real model.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import visionzoo
from visionzoo.layers.selective_kernel import SelectiveKernel
from visionzoo.layers.split_attn import SplitAttn
from visionzoo.models.resnet import ResNet
from visionzoo.models.resnest import ResNestBottleneck
from visionzoo.models.sknet import SelectiveKernelBasic

torch.manual_seed(0)


def _randomize_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_split_attn_weights_sum_to_one_over_the_radix():
    """With identical splits (duplicated conv filters and norm), any softmax over the radix gives the split."""
    sa = SplitAttn(8, 8, radix=2, groups=2).eval()
    _randomize_bn(sa)
    with torch.no_grad():
        half = sa.conv.weight.shape[0] // 2
        sa.conv.weight[half:] = sa.conv.weight[:half]
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(sa.bn0, name)
            t[half:] = t[:half]
    h = torch.randn(2, 4, 6, 6)
    x = torch.cat([h, h], 1)  # the conv's groups split the input by radix too
    with torch.no_grad():
        split = sa.act0(sa.bn0(sa.conv(x)))[:, :half]
        out = sa(x)
    assert out.shape == (2, 8, 6, 6)
    torch.testing.assert_close(out, split, rtol=1e-5, atol=1e-5)


def test_split_attn_radix1_is_a_sigmoid_gate():
    sa = SplitAttn(16, 16, radix=1, groups=4).eval()
    _randomize_bn(sa)
    x = torch.randn(1, 16, 5, 5)
    with torch.no_grad():
        y = sa.act0(sa.bn0(sa.conv(x)))
        gate = torch.sigmoid(sa.fc2(sa.act1(sa.bn1(sa.fc1(y.mean((2, 3), keepdim=True))))))
        torch.testing.assert_close(sa(x), y * gate)
    assert sa.fc1.out_channels == 32  # rd channels never below 32


def test_selective_kernel_mixes_paths_by_a_per_channel_softmax():
    sk = SelectiveKernel(8, 8, split_input=False).eval()
    _randomize_bn(sk)
    assert [p.conv.dilation for p in sk.paths] == [(1, 1), (2, 2)]  # 3x3 and "5x5" (dilated 3x3)
    x = torch.randn(2, 8, 9, 9)
    with torch.no_grad():
        maps = torch.stack([p(x) for p in sk.paths], 1)
        w = sk.attn(maps)
        assert w.shape == (2, 2, 8, 1, 1)
        torch.testing.assert_close(w.sum(1), torch.ones(2, 8, 1, 1))
        out = sk(x)
        torch.testing.assert_close(out, (maps * w).sum(1))
        lo, hi = maps.min(1).values, maps.max(1).values  # a convex combination of the paths
        assert bool((out >= lo - 1e-5).all()) and bool((out <= hi + 1e-5).all())


def test_selective_kernel_split_input_feeds_each_path_its_slice():
    sk = SelectiveKernel(16, 8, stride=2, split_input=True).eval()
    assert [p.conv.in_channels for p in sk.paths] == [8, 8]
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        base = sk(x)
        x2 = x.clone()
        x2[:, 8:] = 0  # the second path's slice changes the output
        assert not torch.allclose(sk(x2), base)
    assert base.shape == (1, 8, 4, 4)


def test_resnet_takes_family_blocks():
    """ResNeSt / SKNet blocks plug into our ResNet (block class + block_args)."""
    for block, args in ((ResNestBottleneck, dict(radix=2, avd=True)), (SelectiveKernelBasic, dict())):
        m = ResNet(layers=(1, 1, 1, 1), block=block, block_args=args, channels=(8, 16, 16, 16), num_classes=5).eval()
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)
        assert [f["reduction"] for f in m.feature_info] == [2, 4, 8, 16, 32]


FAMILY_MODELS = ["legacy_seresnet18", "res2net50_26w_4s", "resnest14d", "resnest50d_4s2x40d",
                 "skresnet18", "skresnext50_32x4d", "tresnet_m", "tresnet_v2_l", "dla34", "dla60_res2next"]


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_family_interface_on_meta(name: str):
    with torch.device("meta"):
        model = visionzoo.create_model(name, num_classes=7, in_chans=1).eval()
        cfg = model.pretrained_cfg
        x = torch.empty(1, 1, *cfg["input_size"][1:])
        assert model(x).shape == (1, 7)
        feats = model.forward_features(x)
        assert feats.shape[1] == model.num_features
        assert model.forward_head(feats, pre_logits=True).shape == (1, model.head_hidden_size)
        # every level where feature_info says, and the final map is the last level's
        final, maps = model.forward_intermediates(x)
        assert final.shape == feats.shape
        for m, info in zip(maps, model.feature_info):
            assert m.shape[1] == info["num_chs"]
            if info["module"]:  # (TResNet's level 0 is the stem, declared at reduction 2)
                assert m.shape[-1] == x.shape[-1] // info["reduction"]
        model.reset_classifier(0, "")
        assert model.get_classifier is not None
        out = model.forward_head(model.forward_features(x))
        assert tuple(out.shape[-2:]) == tuple(cfg["pool_size"])
        model.reset_classifier(3, "avgmax")
        assert model(x).shape == (1, 3)
        fmodel = visionzoo.create_model(name, features_only=True, in_chans=1).eval()
        outs = fmodel(x)
        assert [o.shape[1] for o in outs] == fmodel.feature_info.channels()


def test_legacy_senet_layout():
    with torch.device("meta"):
        m = visionzoo.create_model("legacy_senet154")
    assert m.get_classifier() is m.last_linear
    assert list(m._modules)[:3] == ["layer0", "maxpool", "layer1"] and m.maxpool.ceil_mode
    assert list(m.layer0._modules) == [f"{k}{i}" for i in (1, 2, 3) for k in ("conv", "bn", "relu")]
    assert m.feature_info[0]["module"] == "layer0"
    assert m.layer2[0].downsample[0].kernel_size == (3, 3)  # SENet-154's 3x3 projection shortcuts


def test_grad_checkpointing_same_result():
    for name in ("dla46_c",):
        model = visionzoo.create_model(name, num_classes=4)
        model.train()
        for m in model.modules():  # BN in eval: both passes see the same statistics
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        x = torch.randn(1, 3, 64, 64)  # DLA needs sizes divisible by 32 (pooled and strided paths meet)
        ref = model(x)
        ref.sum().backward()
        g_ref = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        model.set_grad_checkpointing(True)
        out = model(x)
        out.sum().backward()
        g = [p.grad for p in model.parameters() if p.grad is not None]
        torch.testing.assert_close(out, ref)
        assert len(g) == len(g_ref)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
