"""Family-specific behaviour of the efficient hybrids: EfficientViT (MSRA, MIT), MobileViT, FastViT, LeViT."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch

import visionzoo
from visionzoo.layers.attention_bias import offset_bias_index, resample_offset_bias


def _randomize_norms(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and layer scales, so that folding is actually exercised."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            if isinstance(getattr(m, "gamma", None), torch.nn.Parameter):
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=g) * 0.5 + 0.5)


# --- shared offset-bias tables ------------------------------------------------------------------

def test_offset_bias_index_matches_first_appearance_enumeration():
    """The index equals the papers' construction: offsets numbered in order of first appearance."""
    res = 4
    points = list(itertools.product(range(res), range(res)))
    offsets: dict = {}
    idxs = []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            offsets.setdefault(off, len(offsets))
            idxs.append(offsets[off])
    expected = torch.tensor(idxs).view(res * res, res * res)
    assert torch.equal(offset_bias_index((res, res), (res, res), res), expected)


def test_offset_bias_index_strided_queries():
    idx = offset_bias_index((2, 2), (4, 4), 4, stride=2)
    assert idx.shape == (4, 16)
    assert idx[3, 0].item() == 2 * 4 + 2  # query (1, 1) sits at key (2, 2)


def test_resample_offset_bias_keeps_constant_tables():
    table = torch.full((3, 49), 0.5)
    out = resample_offset_bias(table, 9)
    assert out.shape == (3, 81)
    torch.testing.assert_close(out, torch.full((3, 81), 0.5))


# --- EfficientViT (MSRA) ------------------------------------------------------------------------

def test_efficientvit_msra_checkpoint_resampled_for_new_size():
    src = visionzoo.create_model("efficientvit_m0").eval()
    dst = visionzoo.create_model("efficientvit_m0", img_size=320).eval()
    sd = dst.checkpoint_filter_fn(src.state_dict(), dst)
    dst.load_state_dict(sd)
    with torch.no_grad():
        assert dst(torch.randn(1, 3, 320, 320)).shape == (1, 1000)


# --- EfficientViT (MIT) -------------------------------------------------------------------------

def test_efficientvit_mit_linear_attention_matches_naive_formula():
    from visionzoo.models.efficientvit_mit import LiteMLA

    torch.manual_seed(0)
    attn = LiteMLA(32, 32, dim=8, scales=()).eval()
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        out = attn(x)
        qkv = attn.qkv(x).reshape(2, 4, 24, 30).transpose(-1, -2)
        q, k, v = qkv[..., :8].relu(), qkv[..., 8:16].relu(), qkv[..., 16:]
        num = q @ (k.transpose(-1, -2) @ v)
        den = q @ k.sum(dim=-2, keepdim=True).transpose(-1, -2)
        ref = attn.proj((num / (den + attn.eps)).transpose(-1, -2).reshape(2, 32, 5, 6))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# --- MobileViT ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mobilevit_xxs", "mobilevitv2_050"])
def test_mobilevit_any_input_size(name):
    """Maps not divisible by the patch size are resized to whole patches and back."""
    model = visionzoo.create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 200, 168)).shape == (1, 1000)


# --- FastViT: structural re-parameterisation ----------------------------------------------------

@pytest.mark.parametrize("name", ["fastvit_t8", "fastvit_sa12", "fastvit_mci0"])
def test_fastvit_reparameterize_matches_unfused(name):
    torch.manual_seed(0)
    model = visionzoo.create_model(name).eval()
    _randomize_norms(model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        fused = copy.deepcopy(model).reparameterize()
        out = fused(x)
    names = [n for n, _ in fused.named_modules()]
    assert not any(n.endswith((".conv_kxk", ".conv_scale", ".large_conv", ".pos_enc", ".token_mixer.mixer"))
                   for n in names)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_fastvit_optimize_fuses_automatically():
    from visionzoo.deploy.inference import optimize

    torch.manual_seed(0)
    model = visionzoo.create_model("fastvit_t8").eval()
    _randomize_norms(model)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
    opt = optimize(copy.deepcopy(model), backend="torch", dtype=torch.float32, example=x)
    assert opt.report["reparameterized"] > 0
    with torch.no_grad():
        out = opt(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


# --- LeViT --------------------------------------------------------------------------------------

def test_levit_conv_and_linear_modes_agree():
    """The same weights (linear <-> 1x1 conv reshaped by checkpoint_filter_fn) give the same logits."""
    torch.manual_seed(0)
    lin = visionzoo.create_model("levit_128s").eval()
    _randomize_norms(lin)
    conv = visionzoo.create_model("levit_conv_128s").eval()
    conv.load_state_dict(conv.checkpoint_filter_fn(lin.state_dict(), conv))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = lin(x)
        torch.testing.assert_close(conv(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
        maps_lin = lin.forward_intermediates(x, intermediates_only=True)
        maps_conv = conv.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(maps_lin, maps_conv):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_levit_distillation_head():
    torch.manual_seed(0)
    model = visionzoo.create_model("levit_128s", num_classes=5).eval()
    feats = torch.randn(2, 196, 128)
    with torch.no_grad():
        x = model.stages(feats)
        pooled = model.forward_head(x, pre_logits=True)
        torch.testing.assert_close(model.forward_head(x), (model.head(pooled) + model.head_dist(pooled)) / 2)
    model.train()
    model.set_distilled_training(True)
    out = model(torch.randn(2, 3, 224, 224))
    assert isinstance(out, tuple) and len(out) == 2 and out[0].shape == (2, 5)
    model.set_distilled_training(False)
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 5)
    model.reset_classifier(3)
    assert model.head_dist.linear.out_features == 3
    assert not hasattr(visionzoo.create_model("levit_256d"), "head_dist")  # published without one


def test_levit_attention_biases_resampled_for_new_size():
    src = visionzoo.create_model("levit_128s").eval()
    dst = visionzoo.create_model("levit_128s", img_size=288).eval()
    sd = dst.checkpoint_filter_fn(src.state_dict(), dst)
    assert sd["stages.0.blocks.0.attn.attention_biases"].shape == (4, 18 * 18)
    dst.load_state_dict(sd)
    with torch.no_grad():
        assert dst(torch.randn(1, 3, 288, 288)).shape == (1, 1000)
