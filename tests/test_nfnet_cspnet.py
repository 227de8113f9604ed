"""NFNet (scaled weight standardisation, no BatchNorm, alpha/beta residual scaling) and CSPNet
(cross-stage partial stages): family-specific behaviour on tiny models."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import visionzoo
from visionzoo.layers.std_conv import ScaledStdConv2d
from visionzoo.models.cspnet import CspStage
from visionzoo.models.nfnet import ACT_GAMMA, NormFreeBlock


def test_scaled_std_conv_weight_is_standardized_and_scaled():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(16, 8, 3, gamma=1.7, eps=0.0)
    with torch.no_grad():
        conv.weight.mul_(5.0).add_(3.0)  # raw weights far from zero-mean / unit-var
        conv.gain.copy_(torch.linspace(0.5, 2.0, 8).view(8, 1, 1, 1))
    w = conv.standardized_weight().reshape(8, -1).double()
    fan_in = 16 * 9
    assert torch.allclose(w.mean(1), torch.zeros(8, dtype=torch.float64), atol=1e-6)
    expected_std = conv.gain.view(-1).double() * 1.7 / fan_in ** 0.5
    assert torch.allclose(w.std(1, unbiased=False), expected_std, rtol=1e-5)
    # the raw parameter is what is stored: the checkpoint layout stays weight / bias / gain
    assert list(conv.state_dict()) == ["weight", "bias", "gain"]


def test_scaled_std_conv_preserves_unit_variance():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(64, 64, 1, bias=False)
    x = torch.randn(8, 64, 16, 16)
    var = conv(x).var().item()
    assert 0.8 < var < 1.2, var  # no normalisation layer, yet the signal keeps its scale


def test_scaled_std_conv_same_padding_matches_explicit_pad():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(3, 4, 3, stride=2, padding="same")
    x = torch.randn(1, 3, 9, 9)
    ref = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1)), conv.standardized_weight(), conv.bias, 2)
    assert conv(x).shape == (1, 4, 5, 5)
    assert torch.allclose(conv(x), ref, atol=1e-6)


def test_nfnet_has_no_batchnorm_and_tracks_expected_variance():
    with torch.device("meta"):
        model = visionzoo.create_model("nfnet_f0")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and ".attn" not in n}
    assert convs and all(isinstance(m, ScaledStdConv2d) for m in convs.values())
    alpha = 0.2
    for stage in model.stages:
        blocks = list(stage)
        # transition blocks see a fresh (unit-variance after the previous transition) stream ...
        var = 1.0 / blocks[0].beta ** 2
        for j, block in enumerate(blocks):
            assert isinstance(block, NormFreeBlock) and block.alpha == alpha
            assert block.beta == pytest.approx(var ** -0.5)
            var = (1.0 if j == 0 else var) + alpha ** 2  # ... and each block adds alpha^2


def test_nfnet_gamma_placement():
    """nfnet_* fold the activation gamma into every conv; dm_nfnet_* apply it in the activation."""
    with torch.device("meta"):
        folded = visionzoo.create_model("nfnet_f0")
        in_act = visionzoo.create_model("dm_nfnet_f0")
    g = ACT_GAMMA["gelu"]
    c = folded.stages[0][0].conv1
    assert c.scale == pytest.approx(g * c.weight[0].numel() ** -0.5)
    c = in_act.stages[0][0].conv1
    assert c.scale == pytest.approx(c.weight[0].numel() ** -0.5)
    assert in_act.stages[0][0].act1.gamma == pytest.approx(g)
    assert in_act.stages[0][0].skipinit_gain is not None and folded.stages[0][0].skipinit_gain is None


def test_nfnet_block_skipinit_zero_is_identity_on_stream():
    torch.manual_seed(0)
    block = NormFreeBlock(16, 16, bottle_ratio=0.5, skipinit=True, act_layer=nn.ReLU).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        block.skipinit_gain.zero_()
        assert torch.equal(block(x), x)
        block.skipinit_gain.fill_(1.0)
        assert not torch.allclose(block(x), x)


def test_test_nfnet_interface():
    torch.manual_seed(0)
    model = visionzoo.create_model("test_nfnet").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
        assert [64 // m.shape[-1] for m in maps] == [f["reduction"] for f in model.feature_info]
        assert torch.allclose(model.forward_head(final), model(x), atol=1e-5)
        feats = visionzoo.create_model("test_nfnet", features_only=True, out_indices=(1, 4))
        assert [f.shape[1] for f in feats(x)] == [32, 192]
    model.reset_classifier(0, "")
    assert model(torch.randn(1, 3, 160, 160)).shape[-2:] == tuple(model.pretrained_cfg["pool_size"])
    model.set_grad_checkpointing(True)
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()


def _capture_block_input(stage: CspStage, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    seen = {}
    h = stage.blocks.register_forward_hook(lambda m, a, o: seen.setdefault("in", a[0]))
    try:
        with torch.no_grad():
            expanded = stage.conv_exp(stage.conv_down(x))
            stage(x)
    finally:
        h.remove()
    return expanded, seen["in"]


@pytest.mark.parametrize("stage_type,processed", [("csp", 1), ("cs3", 0)])
def test_csp_stage_runs_blocks_on_one_half_only(stage_type, processed):
    torch.manual_seed(0)
    stage = CspStage(16, 32, depth=2, stride=2, stage_type=stage_type, block_type="dark", bottle_ratio=0.5,
                     block_ratio=0.5).eval()
    x = torch.randn(2, 16, 8, 8)
    expanded, block_in = _capture_block_input(stage, x)
    halves = expanded.split(stage.split_chs, dim=1)
    assert block_in.shape[1] == expanded.shape[1] // 2
    assert torch.equal(block_in, halves[processed])
    # the other half crosses the stage: it reaches the transition conv untouched
    with torch.no_grad():
        for p in stage.blocks.parameters():
            p.zero_()
        out_zeroed = stage(x)
        a, b = halves
        if stage_type == "csp":
            b = stage.conv_transition_b(stage.blocks(b))
        else:
            a = stage.blocks(a)
        assert torch.allclose(out_zeroed, stage.conv_transition(torch.cat([a, b], 1)), atol=1e-6)


def test_csp_stage_halves_block_compute():
    stage = CspStage(64, 64, depth=1, stride=1, stage_type="cs3", block_type="dark", block_ratio=0.5)
    plain = CspStage(64, 64, depth=1, stride=1, stage_type="dark", block_type="dark")
    n_blocks = lambda s: sum(p.numel() for p in s.blocks.parameters())  # noqa: E731
    assert n_blocks(stage) * 4 == pytest.approx(n_blocks(plain), rel=0.05)  # half width: ~1/4 the weights


def test_cspnet_interface_tiny():
    torch.manual_seed(0)
    model = visionzoo.create_model("cs3darknet_s", num_classes=7, in_chans=1).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
    assert [m.shape[1] for m in maps] == [32, 64, 128, 256, 512]
    assert model(x).shape == (1, 7)
    taken = model.prune_intermediate_layers(2)
    assert taken == [3, 4] and model.get_classifier().__class__ is nn.Identity


def test_cspnext_layer_blocks_see_main_branch_only():
    from functools import partial

    from visionzoo.layers.conv_norm_act import ConvNormAct
    from visionzoo.models.cspnext import CSPNeXtLayer

    torch.manual_seed(0)
    conv = partial(ConvNormAct, act_layer="silu")
    layer = CSPNeXtLayer(16, 16, depth=2, residual=True, conv=conv).eval()
    x = torch.randn(1, 16, 8, 8)
    seen = {}
    h = layer.blocks.register_forward_hook(lambda m, a, o: seen.update(inp=a[0], out=o))
    with torch.no_grad():
        y = layer(x)
    h.remove()
    assert torch.equal(seen["inp"], layer.main_conv(x))  # half width (expand 0.5) on the main path
    assert seen["inp"].shape[1] == 8
    with torch.no_grad():
        ref = layer.final_conv(layer.attention(torch.cat([seen["out"], layer.short_conv(x)], 1)))
    assert torch.allclose(y, ref, atol=1e-6)


def test_cspnext_tiny_features_and_head():
    torch.manual_seed(0)
    model = visionzoo.create_model("cspnext_tiny").eval()
    feats = visionzoo.create_model("cspnext_tiny", features_only=True, out_indices=(0, 2, 4)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert [f.shape[1] for f in feats(x)] == [24, 96, 384]
        assert "model.stem.0.conv.weight" in feats.state_dict()  # the reference getter layout
        model.reset_classifier(0, "")
        assert model(torch.randn(1, 3, 224, 224)).shape[-2:] == tuple(model.pretrained_cfg["pool_size"])
