"""Family-specific behaviour of the efficient CPU / mobile nets (issue #17): EfficientViM, ..."""
from __future__ import annotations

import pytest
import torch

import visionzoo


def _has(name: str) -> bool:
    return visionzoo.is_model(name)


# --- EfficientViM --------------------------------------------------------------------------------
@pytest.mark.skipif(not _has("efficientvim_m1"), reason="efficientvim not registered")
def test_efficientvim_hsm_ssd_equals_recurrent_scan():
    """HSM-SSD's matrix form equals a token-by-token state update ``h += x_t (a_t * B_t)^T`` (the
    non-causal SSD scan), followed by the gated mixing of the state and the read-out ``y_t = h C_t``."""
    from visionzoo.models.efficientvim import HSMSSD

    torch.manual_seed(0)
    dim, n, hh, ww = 6, 4, 3, 5
    m = HSMSSD(dim, n).eval()
    with torch.no_grad():
        m.D.fill_(0.3)
        m.A.normal_()
        for p in (m.BCdt_proj.conv.weight, m.dw.conv.weight, m.hz_proj.conv.weight, m.out_proj.conv.weight):
            p.normal_(0, 0.5)
    x = torch.randn(2, dim, hh * ww)
    with torch.no_grad():
        y, h = m(x, hh, ww)
        bcdt = m.dw(m.BCdt_proj(x).reshape(2, -1, hh, ww)).flatten(2)
        B, C, dt = bcdt.split([n, n, n], dim=1)
        logits = dt + m.A.view(1, -1, 1)
        a = logits.exp() / logits.exp().sum(-1, keepdim=True)  # selection weights over the tokens
        for b in range(2):
            state = torch.zeros(dim, n)
            for t in range(hh * ww):
                state = state + torch.outer(x[b, :, t], a[b, :, t] * B[b, :, t])
            g, z = m.hz_proj.conv.weight[:, :, 0].matmul(state).split([dim, dim], dim=0)
            state = m.out_proj.conv.weight[:, :, 0].matmul(g * torch.sigmoid(z) * z + g * m.D)
            torch.testing.assert_close(h[b], state, rtol=1e-5, atol=1e-5)
            for t in range(hh * ww):
                torch.testing.assert_close(y[b].flatten(1)[:, t], state.matmul(C[b, :, t]), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not _has("efficientvim_m1"), reason="efficientvim not registered")
def test_efficientvim_multi_stage_fusion_head():
    """Logits are the softmax(weights)-weighted sum of four heads on the pooled stage states; the
    distilled model averages two such fusions."""
    torch.manual_seed(0)
    model = visionzoo.create_model("efficientvim_m1_dist").eval()
    with torch.no_grad():
        model.weights.normal_()
        model.weights_dist.normal_()
        x = torch.randn(1, 3, 128, 128)
        feats = model.forward_features(x)
        assert feats.shape == (1, model.num_features) and model.num_features == 128 + 192 + 320 + 320
        parts = feats.split([128, 192, 320, 320], dim=1)
        w, wd = model.weights.softmax(-1), model.weights_dist.softmax(-1)
        y = sum(w[i] * model.heads[i](parts[i]) for i in range(4))
        yd = sum(wd[i] * model.heads_dist[i](parts[i]) for i in range(4))
        torch.testing.assert_close(model(x), (y + yd) / 2)
        _, maps = model.forward_intermediates(x)
        assert [tuple(m.shape[1:]) for m in maps] == [(128, 8, 8), (192, 4, 4), (320, 2, 2)]


# --- iFormer -------------------------------------------------------------------------------------
@pytest.mark.skipif(not _has("iformer_t"), reason="iformer not registered")
def test_iformer_shma_equals_naive_single_head_attention():
    """SHMA: for every query position, a softmax over all key positions of ``q . k / sqrt(d)``
    weights the sigmoid-squashed values; the result is gated by the sigmoid gate and projected."""
    from visionzoo.models.iformer import SHMA

    torch.manual_seed(0)
    dim, qk, hh, ww = 8, 4, 3, 4
    m = SHMA(dim, qk).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.normal_(1, 0.1)
                mod.bias.normal_(0, 0.1)
    x = torch.randn(1, dim, hh, ww)
    with torch.no_grad():
        y = m(x)
        q, k = m.q(x)[0].flatten(1), m.k(x)[0].flatten(1)
        vg = torch.sigmoid(m.v_gate(x)[0].flatten(1))
        v, gate = vg[:dim], vg[dim:]
        out = torch.empty(dim, hh * ww)
        for i in range(hh * ww):
            logits = torch.stack([(q[:, i] * k[:, j]).sum() / qk ** 0.5 for j in range(hh * ww)])
            p = torch.softmax(logits, 0)
            out[:, i] = (v * p).sum(1) * gate[:, i]
        ref = m.proj(out.reshape(1, dim, hh, ww))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not _has("iformer_h"), reason="iformer not registered")
def test_iformer_layer_scale_and_block_pattern():
    """Only iformer_h carries LayerScale ``gamma`` (on conv, attention and FFN branches, not on the
    position conv); stage 2 mixes conv blocks with cpe / attention / FFN triplets."""
    from visionzoo.models.iformer import AttnBlock, ConvBlock, FfnBlock, PosBlock

    with torch.device("meta"):
        h = visionzoo.create_model("iformer_h")
        t = visionzoo.create_model("iformer_t")
    assert not any(k.endswith("gamma") for k in t.state_dict())
    gammas = [k for k in h.state_dict() if k.endswith("gamma")]
    assert len(gammas) == 67 and not any(".cpe." in k for k in gammas)
    kinds = "".join({ConvBlock: "C", PosBlock: "P", AttnBlock: "A", FfnBlock: "F"}[type(b)] for b in t.stages[2].blocks)
    assert kinds == "CCCCCCPAFPAFPAFC"
