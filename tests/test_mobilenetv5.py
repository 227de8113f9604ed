"""MobileNetV5 capabilities: the multi-scale fusion adapter against a by-hand computation, mobile
multi-query attention (with strided keys/values) against naive per-head attention, RMSNorm,
intermediates and the features_only wrapper, on tiny configurations."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from visionzoo.features import create_feature_model
from visionzoo.models._mobile_blocks import MobileAttention
from visionzoo.models._mobile_builder import MobileArch
from visionzoo.models.mobilenetv5 import MobileNetV5, MultiScaleFusionAdapter, RmsNormAct2d

_TINY = (
    ("er k3 s2 e2 c16",),
    ("uir ks3 km5 s2 e2 c24",),
    ("uir ks5 km5 s2 e2 c32", "mqa h2 kd8 vd8 kv2 c32", "uir ks0 km0 e2 c32"),
    ("uir ks5 km5 s2 e2 c48", "mqa h3 kd8 vd8 c48", "uir ks0 km0 e2 c48"),
)


def _tiny(**kw) -> MobileNetV5:
    arch = MobileArch(_TINY, stem_size=16, fix_stem=True, head_size=0, act="gelu_tanh", mid_divisor=8,
                      layer_scale=1e-5)
    kw.setdefault("num_features", 40)
    kw.setdefault("msfa_output_resolution", 4)
    return MobileNetV5(arch=arch, num_classes=5, **kw)


def _randomize(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # layer scale: make the residual branches count
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif p.ndim == 1:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + eps) * w.view(1, -1, 1, 1)


def test_rms_norm_act_matches_formula() -> None:
    torch.manual_seed(0)
    norm = RmsNormAct2d(6, act_layer="gelu_tanh")
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6))
        x = torch.randn(2, 6, 3, 5)
        torch.testing.assert_close(norm(x), F.gelu(_rms(x, norm.weight), approximate="tanh"))
    assert [k for k in norm.state_dict()] == ["weight"]  # weight only: no bias, no running stats


def test_msfa_equals_by_hand() -> None:
    """Upsample (nearest) the coarse map to the fine one, concat fine first, 1x1 FFN, avg-pool, RMSNorm."""
    torch.manual_seed(0)
    model = _tiny()
    msfa = model.msfa
    assert isinstance(msfa, MultiScaleFusionAdapter)
    _randomize(msfa)
    fine, coarse = torch.randn(2, 32, 8, 8), torch.randn(2, 48, 4, 4)
    with torch.no_grad():
        out = msfa([fine, coarse])
        up = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        x = torch.cat([fine, up], dim=1)
        ffn = msfa.ffn
        h = F.conv2d(x, ffn.pw_exp.conv.weight)
        h = F.gelu(_rms(h, ffn.pw_exp.bn.weight), approximate="tanh")
        h = _rms(F.conv2d(h, ffn.pw_proj.conv.weight), ffn.pw_proj.bn.weight)
        # 8x8 fused grid -> the 4x4 output grid: mean over 2x2 cells
        h = h.reshape(2, 40, 4, 2, 4, 2).mean((3, 5))
        ref = _rms(h, msfa.norm.weight)
    assert ffn.pw_exp.conv.weight.shape == (160, 80, 1, 1)  # expansion 2 of the concatenated width
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_msfa_output_grid_is_fixed() -> None:
    """Whatever the input size, the fused features come out on the configured grid."""
    model = _tiny(msfa_output_resolution=3).eval()
    for size in (64, 96, 128):  # fused grid 4x4 (resized), 6x6 (pooled by 2), 8x8 (resized)
        with torch.no_grad():
            feats = model.forward_features(torch.randn(1, 3, size, size))
        assert feats.shape == (1, 40, 3, 3)


def test_mobile_mqa_with_strided_kv_equals_naive_attention() -> None:
    torch.manual_seed(0)
    model = _tiny()
    block = model.blocks[2][1]
    assert isinstance(block, MobileAttention)
    _randomize(block)
    attn = block.attn
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        out = attn(x)
        q = F.conv2d(x, attn.query.proj.weight).reshape(2, 2, 8, 64)  # B, heads, key dim, N
        kv_in = [F.conv2d(x, br.down_conv.weight, stride=2, padding=1, groups=32) for br in (attn.key, attn.value)]
        k = F.conv2d(_rms(kv_in[0], attn.key.norm.weight), attn.key.proj.weight).reshape(2, 8, 16)
        v = F.conv2d(_rms(kv_in[1], attn.value.norm.weight), attn.value.proj.weight).reshape(2, 8, 16)
        heads = []
        for h in range(2):
            a = torch.einsum("bdn,bdm->bnm", q[:, h], k) / 8 ** 0.5
            heads.append(torch.einsum("bnm,bdm->bdn", a.softmax(-1), v))  # B, value dim, N
        ref = F.conv2d(torch.cat(heads, 1).reshape(2, 16, 8, 8), attn.output.proj.weight)
    assert k.shape[-1] == 16  # keys/values on the 2x-downsampled 4x4 map
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the block: pre-RMSNorm, layer scale, residual
        full = block(x)
        ref_block = x + block.layer_scale.gamma.view(1, -1, 1, 1) * attn(_rms(x, block.norm.weight))
    torch.testing.assert_close(full, ref_block, rtol=1e-5, atol=1e-5)


def test_intermediates_and_features_only() -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, feats)
        assert [m.shape[1:] for m in maps] == [(16, 32, 32), (16, 16, 16), (24, 8, 8), (32, 4, 4), (48, 2, 2)]
        # only the last level asked for: the MSFA still gets its other input stage
        final1, maps1 = model.forward_intermediates(x, indices=1)
        torch.testing.assert_close(final1, feats)
        torch.testing.assert_close(maps1[0], maps[-1])
        fmodel = create_feature_model(model, out_indices=(1, 3, 4)).eval()
        fmaps = fmodel(x)
    assert [m.shape[1] for m in fmaps] == [16, 32, 48]
    for a, b in zip(fmaps, (maps[1], maps[3], maps[4])):
        torch.testing.assert_close(a, b)
    keys = list(fmodel.state_dict())
    assert keys[0] == "model.conv_stem.conv.weight"
    assert not any(".msfa." in k or "classifier" in k for k in keys)  # head and MSFA pruned


def test_pooled_head_and_reset() -> None:
    model = _tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 5)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (1, 40)
        model.reset_classifier(0, "")
        assert model(x).shape == (1, 40, 4, 4)
