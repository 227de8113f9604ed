"""EVA-family capabilities: RoPE forms, gated MLPs, attention pooling, patch dropout,
set_input_size / dynamic_img_size, checkpoint adaptation, forward_intermediates (tiny models)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from visionzoo.layers.mlp import GluMlp, SwiGLU
from visionzoo.layers.patch_dropout import PatchDropoutWithIndices
from visionzoo.layers.rope import AxialRope, MixedRope, apply_rope, rope_gather
from visionzoo.models.eva import Eva


def _tiny(**kw) -> Eva:
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
    args.update(kw)
    torch.manual_seed(0)
    return Eva(**args).eval()


@pytest.mark.parametrize("half", [False, True])
def test_rope_scores_depend_on_offset_only(half):
    """<R(p) q, R(p') k> is a function of p - p' (index coordinates), and rotation keeps norms."""
    rope = AxialRope(8, grid=(6, 6), temperature=100.0, half=half)
    emb = rope.get_embed([6, 6]).reshape(6, 6, -1)
    q, k = torch.randn(8), torch.randn(8)

    def score(p, pp):
        return (apply_rope(q, emb[p], half) * apply_rope(k, emb[pp], half)).sum()

    torch.testing.assert_close(score((1, 2), (3, 0)), score((2, 4), (4, 2)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(score((1, 2), (3, 0)), score((1, 2), (0, 3)))
    torch.testing.assert_close(apply_rope(q, emb[4, 5], half).norm(), q.norm())


def test_rope_ref_grid_and_centered_coords():
    # EVA-02: a 32x32 grid keeps the 16x16 pre-training angle range
    fine = AxialRope(8, grid=(32, 32), ref_grid=(16, 16)).get_embed([32, 32]).reshape(32, 32, -1)
    coarse = AxialRope(8, grid=(16, 16)).get_embed([16, 16]).reshape(16, 16, -1)
    torch.testing.assert_close(fine[2 * 3, 2 * 5], coarse[3, 5])
    # DINOv3: patch centres in [-1, 1] give the same angles for the same relative location
    a = AxialRope(8, coords="centered").get_embed([4, 4]).reshape(4, 4, -1)
    b = AxialRope(8, coords="centered").get_embed([8, 8]).reshape(8, 8, -1)
    torch.testing.assert_close((a[0, 0] - b[0, 0]).abs().max() > 0, torch.tensor(True))
    torch.testing.assert_close(AxialRope(8, coords="centered").get_embed([2, 2])[0],
                               AxialRope(8, coords="centered").get_embed([2, 2])[0])


def test_mixed_rope_reduces_to_axial():
    """Mixed RoPE with axis-aligned frequencies equals axial RoPE (x bands first, interleaved)."""
    head_dim, nb = 8, 2
    axial = AxialRope(head_dim, temperature=100.0, xy=True)
    mixed = MixedRope(head_dim, depth=1, num_heads=1)
    bands = 100.0 ** (-torch.arange(nb, dtype=torch.float32) / nb)
    zeros = torch.zeros(nb)
    with torch.no_grad():
        mixed.freqs[0, 0, 0] = torch.cat([bands, zeros])
        mixed.freqs[1, 0, 0] = torch.cat([zeros, bands])
    torch.testing.assert_close(mixed.get_embed([3, 5])[0, 0], axial.get_embed([3, 5]))


def test_gated_mlps():
    x = torch.randn(2, 5, 16)
    glu = GluMlp(16, 2 * 24, act_layer="silu", gate_last=False)  # EVA-02 tiny/small: packed, gate first
    gate, value = glu.fc1(x).chunk(2, dim=-1)
    torch.testing.assert_close(glu(x), glu.fc2(F.silu(gate) * value))
    m = _tiny(mlp_type="swiglu", scale_mlp=True, mlp_hidden=24)  # EVA-02 base/large: separate fcs + sub-LN
    mlp = m.blocks[0].mlp
    assert isinstance(mlp, SwiGLU) and mlp.fc1_g.out_features == 24 and mlp.norm.normalized_shape == (24,)
    assert isinstance(_tiny(mlp_type="glu", mlp_hidden=24).blocks[0].mlp, GluMlp)


def test_attention_pool_head():
    m = _tiny(global_pool="map", attn_pool_num_heads=2, pool_include_prefix=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        pooled = m.forward_head(feats, pre_logits=True)
        torch.testing.assert_close(pooled, m.attn_pool(feats))  # the class token is pooled too
        assert not torch.allclose(pooled, m.attn_pool(feats[:, 1:]))
        assert m(x).shape == (2, 5)
    m.reset_classifier(0, "avg")
    assert m.attn_pool is None
    with torch.no_grad():
        torch.testing.assert_close(m(x), feats.mean(1))  # pool_include_prefix: prefix tokens averaged too


def test_patch_dropout_keeps_rope_aligned():
    drop = PatchDropoutWithIndices(0.5, num_prefix_tokens=1).train()
    x = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 9, 1).expand(2, 9, 4)
    y, keep = drop(x)
    assert y.shape == (2, 5, 4) and keep.shape == (2, 4)
    torch.testing.assert_close(y[:, 0], x[:, 0])  # prefix kept
    for b in range(2):
        torch.testing.assert_close(y[b, 1:], x[b, 1 + keep[b]])
    emb = torch.randn(8, 6)
    torch.testing.assert_close(rope_gather(emb.unsqueeze(0), keep)[:, 0], emb[keep])
    assert drop.eval()(x)[1] is None
    # in a model: training drops tokens (RoPE gathered to match), eval is unaffected
    m = _tiny(rope_type="axial", use_abs_pos_emb=False, patch_drop_rate=0.5)
    ref = _tiny(rope_type="axial", use_abs_pos_emb=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))
        m.train()
        assert m.forward_features(x).shape == (2, 1 + 8, 32)


@pytest.mark.parametrize("rope", [dict(rope_type="axial", rope_ref_grid=(4, 4)), dict(rope_type="")])
def test_set_input_size_matches_dynamic(rope):
    fixed = _tiny(**rope)
    dynamic = _tiny(dynamic_img_size=True, **rope)
    dynamic.load_state_dict(fixed.state_dict())
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(torch.randn(1, 3, 32, 32)).shape, torch.Size([1, 5]))
        fixed.set_input_size(img_size=(48, 40))
        assert fixed.pos_embed.shape == (1, 1 + 6 * 5, 32)
        torch.testing.assert_close(fixed(x), dynamic(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        fixed(torch.randn(1, 3, 32, 32))  # the new size is now the model's size


def test_set_input_size_patch_size():
    m = _tiny(rope_type="axial")
    m.set_input_size(img_size=48, patch_size=12)
    assert m.patch_embed.proj.weight.shape[-2:] == (12, 12)
    assert m.feature_info[0]["reduction"] == 12 and m.pos_embed.shape == (1, 1 + 16, 32)
    with torch.no_grad():
        maps = m.forward_intermediates(torch.randn(1, 3, 48, 48), intermediates_only=True)
    assert maps[-1].shape == (1, 32, 4, 4)


def test_checkpoint_filter_resamples_pos_embed_and_kernel():
    src = _tiny(img_size=32)
    dst = _tiny(img_size=64, patch_size=16)
    sd = Eva.checkpoint_filter_fn(src.state_dict(), dst)
    assert sd["pos_embed"].shape == dst.pos_embed.shape
    assert sd["patch_embed.proj.weight"].shape == dst.patch_embed.proj.weight.shape
    dst.load_state_dict(sd)
    torch.testing.assert_close(sd["pos_embed"][:, :1], src.pos_embed[:, :1])  # class row kept


def test_forward_intermediates():
    m = _tiny(reg_tokens=2, depth=3, rope_type="axial", init_values=1e-5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, maps = m.forward_intermediates(x)
        torch.testing.assert_close(final, m.forward_features(x))
        assert [t.shape for t in maps] == [torch.Size([2, 32, 4, 4])] * 3
        nlc = m.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True, norm=True)
        assert nlc[0].shape == (2, 16, 32)
        torch.testing.assert_close(nlc[0].transpose(1, 2).reshape(2, 32, 4, 4), m.norm(
            m.forward_intermediates(x, indices=[1], output_fmt="NLC", intermediates_only=True)[0]
        ).transpose(1, 2).reshape(2, 32, 4, 4))
        early, _ = m.forward_intermediates(x, indices=[0], stop_early=True)
    assert early.shape == (2, 1 + 2 + 16, 32)
    m.prune_intermediate_layers([1], prune_norm=True)
    assert len(m.blocks) == 2 and isinstance(m.norm, torch.nn.Identity) and m.num_classes == 0
    assert math.isclose(float(m.blocks[0].gamma_1[0]), 1e-5, rel_tol=1e-6)


# --------------------------------------------------------------------------------------------
# BEiT: relative position bias
# --------------------------------------------------------------------------------------------

def _tiny_beit(img_size=32, **kw):
    from visionzoo.models.beit import Beit

    torch.manual_seed(0)
    return Beit(img_size=img_size, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_hidden=64,
                num_classes=5, **kw).eval()


def test_beit_relative_position_index():
    from visionzoo.models.beit import relative_position_index

    idx = relative_position_index((2, 3))
    num_grid = 3 * 5
    assert idx.shape == (7, 7)
    assert idx[0, 0] == num_grid + 2 and (idx[0, 1:] == num_grid).all() and (idx[1:, 0] == num_grid + 1).all()
    # patch pairs with the same offset share an entry; (0,0)->(1,2) is offset (-1,-2)
    assert idx[1, 1] == idx[2, 2] == (0 + 1) * 5 + (0 + 2)
    assert idx[1, 6] == (-1 + 1) * 5 + (-2 + 2)
    assert len(set(idx[1:, 1:].flatten().tolist())) == num_grid


def test_beit_rel_pos_bias_resampled_on_load():
    from visionzoo.models.beit import Beit, resize_rel_pos_bias_table

    src, dst = _tiny_beit(32), _tiny_beit(48)
    key = "blocks.0.attn.relative_position_bias_table"
    assert src.state_dict()[key].shape == (7 * 7 + 3, 2) and dst.state_dict()[key].shape == (11 * 11 + 3, 2)
    sd = Beit.checkpoint_filter_fn(src.state_dict(), dst)
    dst.load_state_dict(sd)
    table = sd[key]
    torch.testing.assert_close(table[-3:], src.state_dict()[key][-3:])  # class-token entries kept
    # the zero offset stays at the centre of the resampled offset grid with (close to) its value
    centre_old, centre_new = 3 * 7 + 3, 5 * 11 + 5
    torch.testing.assert_close(table[centre_new], src.state_dict()[key][centre_old], rtol=0.2, atol=0.05)
    with torch.no_grad():
        assert dst(torch.randn(1, 3, 48, 48)).shape == (1, 5)
    # resampling to the same window is the identity
    t = torch.randn(7 * 7 + 3, 2)
    assert resize_rel_pos_bias_table(t, (4, 4)) is t


def test_beit_set_input_size():
    m = _tiny_beit(32)
    ref = _tiny_beit(48)
    m.set_input_size(img_size=48)
    assert m.blocks[1].attn.relative_position_index.shape == (37, 37)
    ref.load_state_dict(Beit_filter(m, ref))
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))


def Beit_filter(src, dst):
    from visionzoo.models.beit import Beit

    return Beit.checkpoint_filter_fn(src.state_dict(), dst)


@pytest.mark.parametrize("kw", [dict(rope_type="axial", reg_tokens=1), dict(rope_type="axial", dynamic_img_size=True),
                                dict(rope_type="mixed", global_pool="map"), dict(beit=True)])
def test_torchscript(kw):
    kw = dict(kw)
    m = _tiny_beit() if kw.pop("beit", False) else _tiny(**kw)
    scripted = torch.jit.script(m)
    size = (48, 40) if kw.get("dynamic_img_size") else (32, 32)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), m(x), rtol=1e-5, atol=1e-5)
