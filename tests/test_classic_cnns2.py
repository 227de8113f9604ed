"""Family-specific behaviour of PP-LCNetV2, SelecSLS, DPN, Xception and HRNet (issues 15, 18).

PP-LCNetV2's re-parameterisable depthwise convs fold into one conv with the same outputs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

import visionzoo
from visionzoo.models.lcnetv2 import LCNetV2, RepDepthwiseSeparable


def _randomise_bn(module: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def _small_lcnetv2() -> LCNetV2:
    torch.manual_seed(0)
    model = LCNetV2(scale=0.25, depths=(1, 1, 2, 2), head_chs=64, num_classes=10).eval()
    _randomise_bn(model)
    return model


def test_lcnetv2_reparameterize_matches_unfused() -> None:
    model = _small_lcnetv2()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model.reparameterize()
        out = model(x)
    reps = [m for m in model.modules() if isinstance(m, RepDepthwiseSeparable) and m.use_rep]
    assert reps and all(m.fused and isinstance(m.dw_conv, nn.Conv2d) and len(m.dw_conv_list) == 0 for m in reps)
    assert all(m.dw_conv.kernel_size == (5, 5) and m.dw_conv.groups == m.in_chs for m in reps)
    assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-6
    model.reparameterize()  # idempotent
    with torch.no_grad():
        assert torch.equal(model(x), out)


def test_lcnetv2_rep_branches_skip_1x1_when_strided() -> None:
    """The 1x1 branch exists only at stride 1 (a strided 1x1 would sample a different grid)."""
    strided = RepDepthwiseSeparable(8, 16, stride=2, dw_size=5, use_rep=True)
    plain = RepDepthwiseSeparable(16, 16, stride=1, dw_size=5, use_rep=True, use_shortcut=True)
    assert [b.conv.kernel_size[0] for b in strided.dw_conv_list] == [5, 3]
    assert [b.conv.kernel_size[0] for b in plain.dw_conv_list] == [5, 3, 1]
    assert plain.has_shortcut and not strided.has_shortcut


def test_lcnetv2_optimize_reparameterizes() -> None:
    model = _small_lcnetv2()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    opt = visionzoo.optimize(model, backend="torch", dtype=torch.float32, channels_last=False, fold_bn=False, example=x)
    assert opt.report["reparameterized"] > 0
    assert all(m.fused for m in model.modules() if isinstance(m, RepDepthwiseSeparable) and m.use_rep)
    out = opt(x)
    assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-6


def test_selecsls_long_range_skip_is_the_levels_first_output() -> None:
    """The first module of a level hands its output on as the skip; later modules pass it through
    unchanged and concatenate it before their last 1x1 conv."""
    from visionzoo.models.selecsls import SelecSlsBlock

    torch.manual_seed(0)
    first = SelecSlsBlock(8, 0, 16, 16, is_first=True, stride=2).eval()
    later = SelecSlsBlock(16, 16, 16, 24, is_first=False, stride=1).eval()
    assert later.conv6[0].in_channels == 2 * 16 + 16
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad():
        out, skip = first([x])
        assert out is skip and out.shape == (1, 16, 8, 8)
        out2, skip2 = later([out, skip])
    assert skip2 is skip and out2.shape == (1, 24, 8, 8)


def test_selecsls_intermediates_and_checkpointing_match_forward() -> None:
    torch.manual_seed(0)
    model = visionzoo.create_model("selecsls42b", num_classes=7).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        final, maps = model.forward_intermediates(x)
    assert torch.equal(final, feats)
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
    assert [64 // m.shape[-1] for m in maps[:5]] == [f["reduction"] for f in model.feature_info[:5]]
    model.set_grad_checkpointing(True)
    out = model(x.requires_grad_())
    out.sum().backward()
    with torch.no_grad():
        model.set_grad_checkpointing(False)
        assert torch.allclose(model(x), out, atol=1e-6)


def test_dpn_dual_paths_add_residual_and_grow_dense() -> None:
    """A dual path block adds to the residual path (fixed width) and appends ``inc`` channels to the
    dense path; the level map is the two paths concatenated."""
    from visionzoo.models.dpn import DPN, DualPathBlock

    torch.manual_seed(0)
    proj = DualPathBlock(8, 16, 16, 12, 4, groups=4, kind="proj").eval()
    normal = DualPathBlock(12 + 3 * 4, 16, 16, 12, 4, groups=4).eval()
    with torch.no_grad():
        resid, dense = proj(torch.randn(1, 8, 8, 8))
        assert resid.shape[1] == 12 and dense.shape[1] == 2 * 4 + 4
        resid2, dense2 = normal((resid, dense))
        assert resid2.shape[1] == 12 and dense2.shape[1] == dense.shape[1] + 4
        assert torch.equal(dense2[:, :dense.shape[1]], dense)  # the dense path keeps what it had
    model = DPN(small=True, num_init_features=8, k_r=32, groups=4, k_sec=(1, 1, 1, 1), inc_sec=(4, 4, 4, 4),
                b=True, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in model.feature_info]
    assert model(x).shape == (1, 5)


def test_xception_intermediates_equal_hooked_feature_maps() -> None:
    """The reference's feature modules ``blockN.rep.0`` are the next block's first ReLU: the levels
    ``forward_intermediates`` reads after block N-1 (ReLU'd) equal what hooks on them catch."""
    torch.manual_seed(0)
    model = visionzoo.create_model("legacy_xception", num_classes=3).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        fmodel = visionzoo.create_model("legacy_xception", features_only=True)
        missing, _ = fmodel.load_state_dict({f"body.{k}": v for k, v in model.state_dict().items()}, strict=False)
        assert not missing
        hooked = fmodel.eval()(x)
    assert [m.shape[1] for m in maps] == [64, 128, 256, 728, 2048]
    for a, b in zip(maps, hooked):
        torch.testing.assert_close(a, b)


def test_hrnet_fusion_keeps_every_branch_resolution() -> None:
    from visionzoo.models.hrnet import HighResolutionModule
    from visionzoo.models.resnet import BasicBlock

    torch.manual_seed(0)
    m = HighResolutionModule((4, 8, 16), (1, 1, 1), BasicBlock).eval()
    xs = [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        out = m(xs)
    assert [tuple(o.shape) for o in out] == [tuple(x.shape) for x in xs]
    assert all((o >= 0).all() for o in out)  # fused sums go through a ReLU


def test_hrnet_incremental_features_and_classification_head() -> None:
    """features_only is the reference's incremental mode (stem map + the four widened branch maps, the
    head's folding convs, final conv and classifier gone); the classifier folds those same maps."""
    torch.manual_seed(0)
    model = visionzoo.create_model("hrnet_w18_small", num_classes=5).eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        fold = maps[1]
        for i, down in enumerate(model.downsamp_modules):
            fold = maps[i + 2] + down(fold)
        torch.testing.assert_close(model.final_layer(fold), final)
    assert [m.shape[1] for m in maps] == [64, 128, 256, 512, 1024]
    assert [64 // m.shape[-1] for m in maps] == [2, 4, 8, 16, 32]

    fmodel = visionzoo.create_model("hrnet_w18_small", features_only=True)
    assert type(fmodel).__name__ == "HighResolutionNetFeatures"
    keys = list(fmodel.state_dict())
    assert keys[-1].startswith("incre_modules.3.") and not any(
        k.startswith(("downsamp_modules", "final_layer", "classifier")) for k in keys)
    fmodel.load_state_dict({k: v for k, v in model.state_dict().items() if k in set(keys)})
    with torch.no_grad():
        for a, b in zip(fmodel.eval()(x), maps):
            torch.testing.assert_close(a, b)
