"""Self-attention layers of the byoanet hybrids, checked against direct (loop) formulations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.layers.bottleneck_attn import BottleneckAttn, relative_logits
from visionzoo.layers.halo_attn import HaloAttn
from visionzoo.layers.lambda_layer import LambdaLayer


def test_relative_logits_match_definition() -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 3, 4, 5)                      # N, qh, qw, d
    kh, kw = 6, 7
    rel_h, rel_w = torch.randn(2 * kh - 1, 5), torch.randn(2 * kw - 1, 5)
    out = relative_logits(q, rel_h, rel_w, (kh, kw)).reshape(2, 3, 4, kh, kw)
    ref = torch.empty_like(out)
    for i in range(3):
        for j in range(4):
            for a in range(kh):
                for b in range(kw):
                    ref[:, i, j, a, b] = q[:, i, j] @ (rel_h[a - i + kh - 1] + rel_w[b - j + kw - 1])
    torch.testing.assert_close(out, ref)


def test_bottleneck_attn_is_global_mhsa_with_rel_pos() -> None:
    torch.manual_seed(0)
    m = BottleneckAttn(16, feat_size=4, num_heads=2).eval()
    x = torch.randn(1, 16, 4, 4)
    q, k, v = m.qkv(x).flatten(2).split([16, 16, 16], dim=1)      # 1, C, 16
    out = torch.empty(1, 16, 16)
    for h in range(2):
        sl = slice(8 * h, 8 * h + 8)
        qh, kh, vh = q[0, sl].T, k[0, sl], v[0, sl].T                # 16x8, 8x16, 16x8
        pos = torch.stack([torch.stack([
            qh[4 * i + j] @ (m.pos_embed.height_rel[a - i + 3] + m.pos_embed.width_rel[b - j + 3])
            for a in range(4) for b in range(4)]) for i in range(4) for j in range(4)])
        attn = (qh @ kh * 8 ** -0.5 + pos).softmax(-1)
        out[0, sl] = (attn @ vh).T
    torch.testing.assert_close(m(x), out.reshape(1, 16, 4, 4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_halo_attn_matches_local_window_attention(stride: int) -> None:
    torch.manual_seed(0)
    bs, halo, heads = 4, 1, 2
    m = HaloAttn(8, num_heads=heads, block_size=bs, halo_size=halo, stride=stride).eval()
    x = torch.randn(1, 8, 8, 8)
    out = m(x)
    assert out.shape == (1, 8, 8 // stride, 8 // stride)
    q_all = m.q(x)                                                   # strided queries when stride 2
    kv = F.pad(m.kv(x), [halo] * 4)
    win, d = bs + 2 * halo, 4
    bsd = bs // stride
    for h in range(heads):
        kv_h = kv[0, h * 2 * d:(h + 1) * 2 * d]                      # per head: [k | v]
        for oy in range(8 // stride):
            for ox in range(8 // stride):
                by, bx = oy // bsd, ox // bsd                        # query block
                qy, qx = oy % bsd, ox % bsd
                qv = q_all[0, h * d:(h + 1) * d, oy, ox]
                keys = kv_h[:d, by * bs:by * bs + win, bx * bs:bx * bs + win].reshape(d, -1)
                vals = kv_h[d:, by * bs:by * bs + win, bx * bs:bx * bs + win].reshape(d, -1)
                pos = torch.stack([qv @ (m.pos_embed.height_rel[a - qy + win - 1] + m.pos_embed.width_rel[b - qx + win - 1])
                                   for a in range(win) for b in range(win)])
                attn = (qv @ keys * d ** -0.5 + pos).softmax(-1)
                torch.testing.assert_close(out[0, h * d:(h + 1) * d, oy, ox], vals @ attn, rtol=1e-5, atol=1e-5)


def test_halo_attn_pads_sizes_the_blocks_do_not_divide() -> None:
    m = HaloAttn(16, block_size=8, halo_size=2).eval()
    assert m(torch.randn(1, 16, 28, 20)).shape == (1, 16, 28, 20)


@pytest.mark.parametrize("r", [3, None])
def test_lambda_layer_shapes_and_content_lambda(r) -> None:
    torch.manual_seed(0)
    m = LambdaLayer(32, feat_size=6, num_heads=4, dim_head=8, r=r).eval()
    x = torch.randn(2, 32, 6, 6)
    out = m(x)
    assert out.shape == (2, 32, 6, 6)
    if r is None:
        # zero position embeddings leave the content lambda alone: q_m (softmax(K) V^T)
        q, k, v = m.qkv(x).split([32, 8, 8], dim=1)
        q = m.norm_q(q).reshape(2, 4, 8, 36)
        v = m.norm_v(v).reshape(2, 8, 36)
        lam = torch.einsum("bkm,bvm->bkv", k.reshape(2, 8, 36).softmax(-1), v)
        ref = torch.einsum("bhkm,bkv->bhvm", q, lam).reshape(2, 32, 6, 6)
        with torch.no_grad():
            m.pos_emb.zero_()
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
    assert LambdaLayer(32, stride=2, r=r, feat_size=6)(x).shape == (2, 32, 3, 3)


def test_byoanet_variants_build_on_meta() -> None:
    names = set(visionzoo.list_models(module="byoanet"))
    assert {"botnet26t_256", "halonet26t", "lambda_resnet26t", "haloregnetz_b"} <= names
    with torch.device("meta"):
        model = visionzoo.create_model("lamhalobotnet50ts_256", num_classes=3)
        out = model(torch.empty(1, 3, 256, 256))
    assert out.shape == (1, 3)


def test_optimize_handles_lambda_conv3d() -> None:
    """channels-last conversion skips the lambda layer's 5-D Conv3d weight."""
    from visionzoo.models.byobnet import BlockSpec as B
    from visionzoo.models.byobnet import ByobNet, NetSpec

    spec = NetSpec(blocks=(B("bottle", 1, 32, 1, bottle=0.25), B("self_attn", 2, 64, bottle=0.25)), stem_chs=16,
                   stem_type="tiered", self_attn="lambda", self_attn_kwargs=dict(r=5))
    torch.manual_seed(0)
    model = ByobNet(cfg=spec, num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fast = visionzoo.optimize(model, backend="torch", dtype=torch.float32, example=x)
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
