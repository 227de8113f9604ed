"""Family behaviour of XCiT (cross-covariance attention, class attention, any input size), ConViT
(gated positional self-attention, late class token) and PiT (pooling stages, distilled head)."""
from __future__ import annotations

import pytest
import torch

import visionzoo
from visionzoo.models.convit import GPSA, ConVit
from visionzoo.models.pit import PoolingVisionTransformer, PoolingVisionTransformerDistilled
from visionzoo.models.xcit import XCA, XCiT, ClassAttentionBlock, PositionalEncodingFourier


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def _tiny_xcit(**kw) -> XCiT:
    args = dict(embed_dim=64, depth=2, num_heads=4, patch_size=16, cls_attn_layers=2, num_classes=10, tokens_norm=True)
    args.update(kw)
    return XCiT(**args).eval()


# ---- XCiT ---------------------------------------------------------------------------------------

def test_xca_equals_naive_channel_attention():
    torch.manual_seed(0)
    attn = XCA(32, num_heads=4, qkv_bias=True).eval()
    _randomize(attn)
    x = torch.randn(2, 10, 32)
    b, n, c, h = 2, 10, 32, 4
    d = c // h
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = (t.reshape(b, n, h, d) for t in qkv.split(c, dim=-1))              # [B, N, H, d]
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)                          # unit norm over tokens
    k = k / k.norm(dim=1, keepdim=True).clamp_min(1e-12)
    logits = torch.einsum("bnhi,bnhj->bhij", q, k) * attn.temperature.view(1, h, 1, 1)  # channel x channel
    a = logits.softmax(dim=-1)
    out = torch.einsum("bhij,bnhj->bnhi", a, v).reshape(b, n, c)
    expected = out @ attn.proj.weight.T + attn.proj.bias
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_xca_temperature_sharpens_channel_attention():
    attn = XCA(16, num_heads=2).eval()
    x = torch.randn(1, 6, 16)
    with torch.no_grad():
        attn.temperature.fill_(0.0)  # zero temperature: uniform attention over channels
        q, k, v = attn.qkv(x).reshape(1, 6, 3, 2, 8).permute(2, 0, 3, 4, 1).unbind(0)
        uniform = v.mean(dim=2, keepdim=True).expand(-1, -1, 8, -1)                # [B, H, d, N]
        expected = attn.proj(uniform.permute(0, 3, 1, 2).reshape(1, 6, 16))
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_fourier_encoding_equals_naive_sine_table():
    """Before the 1x1 projection: channel ``i < D`` is ``sin``/``cos`` (even/odd ``i``) of the row
    coordinate ``2*pi*(r+1)/H`` over ``T^(2*(i//2)/D)``; channels ``D..2D`` the same for columns."""
    d, h, w = 8, 4, 5
    enc = PositionalEncodingFourier(hidden_dim=d, dim=2 * d).eval()
    with torch.no_grad():
        enc.token_projection.weight.copy_(torch.eye(2 * d).view(2 * d, 2 * d, 1, 1))
        enc.token_projection.bias.zero_()
        out = enc(3, h, w)
    assert out.shape == (3, 2 * d, h, w)
    torch.testing.assert_close(out[0], out[2])
    expected = torch.empty(2 * d, h, w, dtype=torch.float64)
    for i in range(d):
        f = 10000.0 ** (2 * (i // 2) / d)
        fn = torch.sin if i % 2 == 0 else torch.cos
        rows = (torch.arange(h, dtype=torch.float64) + 1) / h * 2 * torch.pi
        cols = (torch.arange(w, dtype=torch.float64) + 1) / w * 2 * torch.pi
        expected[i] = fn(rows / f)[:, None].expand(h, w)
        expected[d + i] = fn(cols / f)[None, :].expand(h, w)
    torch.testing.assert_close(out[0].double(), expected, rtol=1e-4, atol=1e-5)


def test_class_attention_block_patch_tokens_ignore_class_token():
    """The class token reads the patch tokens; the patch tokens never read the class token (they
    are only carried through as ``2 * norm2(p + gamma1 * norm1(p))``, as in the published weights)."""
    torch.manual_seed(0)
    blk = ClassAttentionBlock(32, 4, qkv_bias=True, tokens_norm=True).eval()
    _randomize(blk)
    x = torch.randn(2, 7, 32)
    y = x.clone()
    y[:, 0] = torch.randn(2, 32)  # another class token
    with torch.no_grad():
        ox, oy = blk(x), blk(y)
        torch.testing.assert_close(ox[:, 1:], oy[:, 1:])
        assert not torch.allclose(ox[:, :1], oy[:, :1])
        p = x[:, 1:]
        expected = 2 * blk.norm2(p + blk.gamma1 * blk.norm1(p))
        torch.testing.assert_close(ox[:, 1:], expected, rtol=1e-5, atol=1e-5)
        z = x.clone()
        z[:, 3] = torch.randn(2, 32)  # a patch token changes: the class token's update follows
        assert not torch.allclose(blk(z)[:, :1], ox[:, :1])


def test_xcit_trunk_never_sees_class_token():
    model = _tiny_xcit()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        logits = model(x)
        model.cls_token.copy_(torch.randn_like(model.cls_token))
        maps2 = model.forward_intermediates(x, intermediates_only=True)
        for a, b in zip(maps, maps2):
            torch.testing.assert_close(a, b)
        assert not torch.allclose(model(x), logits)


def test_xcit_any_input_size():
    model = _tiny_xcit(patch_size=8)
    with torch.no_grad():
        for h, w in ((64, 64), (48, 80)):
            x = torch.randn(2, 3, h, w)
            maps = model.forward_intermediates(x, intermediates_only=True)
            assert [tuple(m.shape) for m in maps] == [(2, 64, h // 8, w // 8)] * 2
            assert model(x).shape == (2, 10)


def test_xcit_registered_features_grid_follows_input():
    model = visionzoo.create_model("xcit_nano_12_p16_224", features_only=True, out_indices=(11,)).eval()
    with torch.no_grad():
        (m,) = model(torch.randn(1, 3, 96, 128))
    assert m.shape == (1, 128, 6, 8)


# ---- ConViT -------------------------------------------------------------------------------------

def _gpsa(heads: int = 4, grid=(5, 5)) -> GPSA:
    g = GPSA(32, num_heads=heads, grid_size=grid).eval()
    _randomize(g)
    g.local_init()
    return g


def test_gpsa_locality_init_attends_to_kernel_offsets():
    """At init head ``(h1, h2)`` of the ``sqrt(heads)``-wide kernel peaks at offset (dy, dx) = (h1-c, h2-c)."""
    g = _gpsa(heads=9, grid=(7, 7))
    with torch.no_grad():
        pos = g.positional_attention(49)[0]                 # [H, N, N]
        torch.testing.assert_close(g.gating_param, torch.ones(9))
    centre = 3 * 7 + 3
    for h1 in range(3):
        for h2 in range(3):
            j = int(pos[h1 + 3 * h2, centre].argmax())
            assert (j // 7 - 3, j % 7 - 3) == (h1 - 1, h2 - 1)


def test_gpsa_positional_part_ignores_content_and_gate_interpolates():
    g = _gpsa()
    x, y = torch.randn(2, 25, 32), torch.randn(2, 25, 32)
    with torch.no_grad():
        pos = g.positional_attention(25)
        assert pos.shape == (1, 4, 25, 25)
        torch.testing.assert_close(pos.sum(-1), torch.ones(1, 4, 25))
        # gate fully open: attention is the positional one, whatever the content
        g.gating_param.fill_(1e4)
        torch.testing.assert_close(g.get_attention(x), pos.expand(2, -1, -1, -1))
        torch.testing.assert_close(g.get_attention(y), pos.expand(2, -1, -1, -1))
        # gate shut: plain content attention
        g.gating_param.fill_(-1e4)
        q, k = g.qk(x).reshape(2, 25, 2, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)
        content = (q @ k.transpose(-2, -1) * 8 ** -0.5).softmax(-1)
        torch.testing.assert_close(g.get_attention(x), content)
        # in between: the sigmoid(gate) mixture per head
        g.gating_param.copy_(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
        s = torch.sigmoid(g.gating_param).view(1, 4, 1, 1)
        torch.testing.assert_close(g.get_attention(x), (1 - s) * content + s * pos, rtol=1e-5, atol=1e-6)


def test_convit_class_token_joins_late():
    model = ConVit(img_size=64, embed_dim=32, depth=4, num_heads=4, local_up_to_layer=2, num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        assert [tuple(m.shape) for m in maps] == [(1, 32, 4, 4)] * 4
        logits = model(x)
        model.cls_token.copy_(torch.randn_like(model.cls_token))
        maps2 = model.forward_intermediates(x, intermediates_only=True)
    for i in range(2):  # GPSA blocks: patch tokens only
        torch.testing.assert_close(maps[i], maps2[i])
    assert not torch.allclose(maps[3], maps2[3])  # after the class token joined, patches attend to it
    assert not torch.allclose(model(x), logits)


def test_convit_other_img_size_loads_resampled_weights():
    small = dict(embed_dim=32, depth=2, num_heads=4, local_up_to_layer=1, num_classes=5)
    src = ConVit(img_size=64, **small)
    model = ConVit(img_size=96, **small).eval()
    model.load_state_dict(ConVit.checkpoint_filter_fn(src.state_dict(), model))
    assert model.pos_embed.shape == (1, 36, 32)
    assert model.blocks[0].attn.rel_indices.shape == (1, 36, 36, 3)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 5)


# ---- PiT ----------------------------------------------------------------------------------------

def _tiny_pit(cls=PoolingVisionTransformer, **kw):
    args = dict(img_size=64, patch_size=8, stride=4, base_dims=(8, 8, 8), depth=(1, 1, 1), heads=(2, 4, 8),
                num_classes=6)
    args.update(kw)
    return cls(**args).eval()


def test_pit_pooling_halves_grid_and_doubles_width():
    model = _tiny_pit()
    with torch.no_grad():
        maps = model.forward_intermediates(torch.randn(2, 3, 64, 64), intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(2, 16, 15, 15), (2, 32, 8, 8), (2, 64, 4, 4)]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16]


def test_pit_distilled_head_averages_in_eval_and_splits_in_distilled_training():
    model = _tiny_pit(PoolingVisionTransformerDistilled)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 2, 64)
        cls_logits, dist_logits = model.head(tokens[:, 0]), model.head_dist(tokens[:, 1])
        torch.testing.assert_close(model(x), (cls_logits + dist_logits) / 2)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens.mean(dim=1))
        model.train()
        torch.testing.assert_close(model(x), (cls_logits + dist_logits) / 2)  # plain training: still the mean
        model.set_distilled_training(True)
        out = model(x)
    assert isinstance(out, tuple)
    torch.testing.assert_close(out[0], cls_logits)
    torch.testing.assert_close(out[1], dist_logits)
    model.reset_classifier(3)
    assert model.head.out_features == model.head_dist.out_features == 3


def test_pit_features_hook_wrapper_nests_body():
    model = visionzoo.create_model("pit_ti_distilled_224", features_only=True).eval()
    keys = list(model.state_dict())
    assert keys[0] == "body.pos_embed" and not any(k.startswith("body.head") for k in keys)
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 27, 27), (128, 14, 14), (256, 7, 7)]


def test_pit_other_img_size_loads_resampled_pos_embed():
    src = _tiny_pit()
    model = _tiny_pit(img_size=96)
    sd = PoolingVisionTransformer.checkpoint_filter_fn(src.state_dict(), model)
    model.load_state_dict(sd)
    assert model.pos_embed.shape == (1, 16, 23, 23)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 6)


@pytest.mark.parametrize("name", ["xcit_nano_12_p16_224", "convit_tiny", "pit_ti_distilled_224"])
def test_builds_on_meta(name):
    with torch.device("meta"):
        model = visionzoo.create_model(name)
    assert all(p.is_meta for p in model.parameters())
