"""ByobNet block-spec builder: re-parameterisation (RepVGG / MobileOne), the optimize hook,
dilation, feature levels and the CLIP attention-pool head, on tiny specs."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import visionzoo
from visionzoo.models.byobnet import BlockSpec as B
from visionzoo.models.byobnet import ByobNet, MobileOneBlock, NetSpec, RepVggBlock

TINY_REPVGG = NetSpec(blocks=(B("rep", 2, 16), B("rep", 3, 32, alt_groups=2), B("rep", 1, 48)),
                      stem_type="rep", stem_chs=16, attn="se", attn_kwargs=dict(rd_ratio=0.25))


def _tiny_mobileone() -> NetSpec:
    pairs = []
    prev = 16
    for out, se in ((24, None), (32, "se")):
        pairs.append((B("one", 1, prev, group_size=1, attn=se, kwargs=dict(num_branches=3)),
                      B("one", 1, out, group_size=0, attn=se, kwargs=dict(num_branches=3, kernel_size=1)),
                      B("one", 1, out, 1, group_size=1, attn=se, kwargs=dict(num_branches=3))))
        prev = out
    return NetSpec(blocks=tuple(pairs), stem_type="one", stem_chs=16)


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("spec", [TINY_REPVGG, _tiny_mobileone()], ids=["repvgg", "mobileone"])
def test_reparameterize_matches_unfused(spec: NetSpec) -> None:
    torch.manual_seed(0)
    model = ByobNet(cfg=spec, num_classes=10).eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        ref_feats = model.forward_intermediates(x, intermediates_only=True)
    blocks = [m for m in model.modules() if isinstance(m, (RepVggBlock, MobileOneBlock))]
    assert blocks and any(b.identity is not None for b in blocks)
    n_params = sum(p.numel() for p in model.parameters())
    model.reparameterize()
    for b in blocks:
        assert isinstance(b.reparam_conv, nn.Conv2d)
        assert b.identity is None and b.conv_kxk is None
        assert not any(isinstance(m, nn.BatchNorm2d) for m in b.modules())
    assert sum(p.numel() for p in model.parameters()) < n_params
    with torch.no_grad():
        out = model(x)
        feats = model.forward_intermediates(x, intermediates_only=True)
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 1e-5 * scale + 1e-6
    for a, b in zip(feats, ref_feats):
        assert (a - b).abs().max().item() <= 1e-5 * b.abs().max().item() + 1e-6
    model.reparameterize()  # idempotent
    with torch.no_grad():
        assert torch.equal(model(x), out)


def test_reparameterize_grouped_identity_kernel() -> None:
    """The identity branch of a grouped block becomes the grouped identity kernel."""
    from visionzoo.models.byobnet import LayerEnv

    block = RepVggBlock(8, 8, env=LayerEnv(NetSpec(blocks=()), None, None), groups=4).eval()
    _randomise_bn(block)
    x = torch.randn(1, 8, 9, 9)
    with torch.no_grad():
        ref = block(x)
        block.reparameterize()
        out = block(x)
    assert block.reparam_conv.groups == 4
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_optimize_reparameterizes() -> None:
    torch.manual_seed(0)
    model = ByobNet(cfg=TINY_REPVGG, num_classes=10).eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    opt = visionzoo.optimize(model, backend="torch", dtype=torch.float32, channels_last=False, fold_bn=False, example=x)
    assert opt.report["reparameterized"] > 0
    assert all(b.reparam_conv is not None for b in model.modules() if isinstance(b, RepVggBlock))
    out = opt(x)
    assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-6


def test_optimize_can_skip_reparam() -> None:
    model = ByobNet(cfg=TINY_REPVGG, num_classes=10).eval()
    visionzoo.optimize(model, backend="torch", dtype=torch.float32, channels_last=False, fold_bn=False, reparam=False,
                       example=torch.randn(1, 3, 32, 32))
    assert all(b.reparam_conv is None for b in model.modules() if isinstance(b, RepVggBlock))


def test_output_stride_dilates() -> None:
    spec = NetSpec(blocks=(B("bottle", 1, 32, 1, bottle=0.25), B("bottle", 1, 64, bottle=0.25),
                           B("basic", 1, 64), B("bottle", 1, 128, group_size=8, bottle=0.5)),
                   stem_chs=16, stem_type="tiered", stem_pool="maxpool", downsample="avg")
    m32 = ByobNet(cfg=spec, num_classes=0).eval()
    m16 = ByobNet(cfg=spec, num_classes=0, output_stride=16).eval()
    x = torch.randn(1, 3, 64, 64)
    assert m32.forward_features(x).shape[-1] == 2
    assert m16.forward_features(x).shape[-1] == 4
    m16.load_state_dict(m32.state_dict())  # dilation changes no weight shape


def test_feature_levels_and_pruning() -> None:
    spec = NetSpec(blocks=(B("edge", 1, 32, bottle=0.5), B("dark", 1, 48, bottle=0.5), B("basic", 1, 64),
                           B("bottle", 1, 64, 1, bottle=0.25)),
                   stem_chs=24, stem_pool="", num_features=96)
    model = ByobNet(cfg=spec, num_classes=5).eval()
    # a level is the last map at each reduction: the stride-1 last stage folds into final_conv
    assert [f["module"] for f in model.feature_info] == ["stem", "stages.0", "stages.1", "final_conv"]
    x = torch.randn(1, 3, 64, 64)
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
    assert [64 // m.shape[-1] for m in maps] == [f["reduction"] for f in model.feature_info]
    final, _ = model.forward_intermediates(x)
    assert torch.allclose(final, model.forward_features(x))
    model.prune_intermediate_layers(indices=(1, 2))
    assert len(model.stages) == 2 and isinstance(model.final_conv, nn.Identity)
    assert len(model.forward_intermediates(x, intermediates_only=True)) == 3


def test_clip_attention_pool_head() -> None:
    spec = NetSpec(blocks=(B("bottle", 1, 64, 1, bottle=0.25), B("bottle", 1, 128, bottle=0.25)),
                   stem_chs=(8, 8, 16), stem_type="", stem_pool="avg2", downsample="avg", aa="avg", head="attn_abs")
    model = ByobNet(cfg=spec, num_classes=32, img_size=64).eval()
    assert model.head.pos_embed.shape == (8 * 8 + 1, 128)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 32)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 128)
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 32)  # pos embed resampled
    assert model.get_classifier() is model.head.proj
    model.reset_classifier(0, "")
    assert model.forward_head(model.forward_features(x)).shape == (2, 128, 8, 8)


def test_registered_variants_build_on_meta() -> None:
    names = visionzoo.list_models(module="byobnet")
    assert {"repvgg_a0", "mobileone_s0", "gernet_s", "resnet50_clip", "regnetz_b16_evos"} <= set(names)
    with torch.device("meta"):
        m = visionzoo.create_model("mobileone_s1", num_classes=7)
    assert m.get_classifier().out_features == 7


def test_clip_pos_embed_resampled_on_load() -> None:
    spec = NetSpec(blocks=(B("bottle", 1, 32, 1, bottle=0.25), B("bottle", 1, 64, bottle=0.25)),
                   stem_chs=(8, 8, 16), stem_type="", stem_pool="avg2", downsample="avg", aa="avg", head="attn_abs")
    src = ByobNet(cfg=spec, num_classes=4, img_size=64)
    dst = ByobNet(cfg=spec, num_classes=4, img_size=96)
    sd = ByobNet.checkpoint_filter_fn(src.state_dict(), dst)
    assert sd["head.pos_embed"].shape == (12 * 12 + 1, 64)
    torch.testing.assert_close(sd["head.pos_embed"][0], src.head.pos_embed[0])  # the mean-token row is kept
    dst.load_state_dict(sd)
