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
