"""PVTv2, Twins, Sequencer2D and Next-ViT: their token mixers against direct computations, and
their features_only maps.

* spatial-reduction attention (PVTv2 / Twins GSA, conv and linear-pool variants) equals
  attention written out with explicit patch sums, LayerNorm and per-head softmax;
* Twins' locally-grouped attention equals self-attention run window by window on the
  zero-padded map;
* BiLSTM2D equals ``nn.LSTM`` run by hand down every column and along every row, and only
  mixes a position with its own row and column;
* Next-ViT's E-MHSA pools keys/values over runs of ``sr**2`` raster-order tokens;
* features_only maps have the advertised widths/strides/layout and equal
  ``forward_intermediates``.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.builder import init_non_persistent_buffers
from visionzoo.features import create_feature_model
from visionzoo.layers.sr_attention import SpatialReductionAttention
from visionzoo.models.nextvit import EfficientMhsa
from visionzoo.models.sequencer import BiLstm2d
from visionzoo.models.twins import LocallyGroupedAttention

from fill import fill_model, make_input


def _layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _mhsa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head, for [N, C] / [M, C] / [M, C] matrices."""
    d = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        w = torch.softmax(q[:, sl] @ k[:, sl].T / d ** 0.5, dim=-1)
        outs.append(w @ v[:, sl])
    return torch.cat(outs, dim=-1)


def _linear(x: torch.Tensor, fc: torch.nn.Linear) -> torch.Tensor:
    return x @ fc.weight.T + fc.bias


def _naive_sra(attn: SpatialReductionAttention, x: torch.Tensor, linear: bool) -> torch.Tensor:
    """One image [H, W, C]: keys/values from explicit patch sums (conv) or 2x2 means (linear, 14 -> 7)."""
    h, w, c = x.shape
    q = _linear(x.reshape(h * w, c), attn.q)
    if linear:
        pooled = x.reshape(7, h // 7, 7, w // 7, c).mean(dim=(1, 3)).reshape(49, c)
        red = pooled @ attn.sr.weight[:, :, 0, 0].T + attn.sr.bias
        red = F.gelu(_layer_norm(red, attn.norm))
    else:
        r = attn.sr.kernel_size[0]
        rows = []
        for i in range(h // r):
            for j in range(w // r):
                patch = x[i * r:(i + 1) * r, j * r:(j + 1) * r, :]  # [r, r, C]
                rows.append(torch.einsum("hwc,ochw->o", patch, attn.sr.weight) + attn.sr.bias)
        red = _layer_norm(torch.stack(rows), attn.norm)
    kv = _linear(red, attn.kv)
    out = _mhsa(q, kv[:, :c], kv[:, c:], attn.num_heads)
    return _linear(out, attn.proj).reshape(h, w, c)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("linear,sr_ratio", [(False, 2), (False, 4), (True, 1)])
def test_spatial_reduction_attention_equals_naive(fused: bool, linear: bool, sr_ratio: int) -> None:
    torch.manual_seed(0)
    attn = SpatialReductionAttention(24, num_heads=3, sr_ratio=sr_ratio, linear=linear).double().eval()
    attn.fused_attn = fused
    with torch.no_grad():
        for p in attn.parameters():  # non-trivial norms and biases
            p.add_(0.1 * torch.randn_like(p))
        x = torch.randn(2, 14, 14, 24, dtype=torch.float64)
        out = attn(x)
        ref = torch.stack([_naive_sra(attn, x[b], linear) for b in range(2)])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # the reduced key/value set: 14x14 -> (14 / sr)^2 positions, or the fixed 7x7 grid when linear
    assert attn.reduced(x).shape[1] == (49 if linear else (14 // sr_ratio) ** 2)


def test_sra_without_reduction_is_plain_attention() -> None:
    torch.manual_seed(0)
    attn = SpatialReductionAttention(16, num_heads=2, sr_ratio=1).double().eval()
    x = torch.randn(1, 5, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        t = x.reshape(15, 16)
        kv = _linear(t, attn.kv)
        ref = _linear(_mhsa(_linear(t, attn.q), kv[:, :16], kv[:, 16:], 2), attn.proj)
        torch.testing.assert_close(attn(x).reshape(15, 16), ref)


@pytest.mark.parametrize("hw", [(8, 8), (6, 7), (9, 5)])
def test_locally_grouped_attention_equals_per_window_attention(hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    ws, c, heads = 4, 16, 2
    lsa = LocallyGroupedAttention(c, num_heads=heads, ws=ws).double().eval()
    h, w = hw
    x = torch.randn(2, h, w, c, dtype=torch.float64)
    with torch.no_grad():
        out = lsa(x)
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        padded = torch.zeros(2, hp, wp, c, dtype=torch.float64)
        padded[:, :h, :w] = x
        ref = torch.zeros_like(padded)
        for b in range(2):
            for i in range(0, hp, ws):
                for j in range(0, wp, ws):
                    tokens = padded[b, i:i + ws, j:j + ws].reshape(ws * ws, c)
                    qkv = _linear(tokens, lsa.qkv)
                    y = _mhsa(qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:], heads)
                    ref[b, i:i + ws, j:j + ws] = _linear(y, lsa.proj).reshape(ws, ws, c)
    torch.testing.assert_close(out, ref[:, :h, :w], rtol=1e-10, atol=1e-10)
    # attention stays inside the window: a token in window (0, 0) does not move window (0, 1)'s outputs
    if w > ws:
        x2 = x.clone()
        x2[:, 0, 0] += 1.0
        with torch.no_grad():
            out2 = lsa(x2)
        torch.testing.assert_close(out2[:, :, ws:], out[:, :, ws:])
        assert not torch.allclose(out2[:, :ws, :ws], out[:, :ws, :ws])


def test_bilstm2d_equals_lstm_along_columns_and_rows() -> None:
    torch.manual_seed(0)
    mix = BiLstm2d(8, hidden_size=3).double().eval()
    b, h, w, c = 2, 4, 5, 8
    x = torch.randn(b, h, w, c, dtype=torch.float64)
    with torch.no_grad():
        out = mix(x)
        vert = torch.zeros(b, h, w, 6, dtype=torch.float64)
        horiz = torch.zeros(b, h, w, 6, dtype=torch.float64)
        for n in range(b):
            for j in range(w):  # down each column
                vert[n, :, j], _ = mix.rnn_v(x[n, :, j][None])
            for i in range(h):  # along each row
                horiz[n, i], _ = mix.rnn_h(x[n, i][None])
        ref = _linear(torch.cat([vert, horiz], dim=-1), mix.fc)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # a position only reaches its own row and column (both directions)
    x2 = x.clone()
    x2[0, 1, 2] += 1.0
    with torch.no_grad():
        changed = (mix(x2) - out).abs().amax(-1)[0] > 1e-12
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[1, :] = True
    expected[:, 2] = True
    assert torch.equal(changed, expected)


def test_e_mhsa_pools_runs_of_raster_tokens() -> None:
    torch.manual_seed(0)
    attn = EfficientMhsa(64, sr_ratio=2).double().eval()
    with torch.no_grad():
        attn.norm.running_mean.normal_()
        attn.norm.running_var.uniform_(0.5, 1.5)
        x = torch.randn(1, 36, 64, dtype=torch.float64)
        out = attn(x)[0]
        pooled = x[0].reshape(9, 4, 64).mean(1)  # runs of sr**2 = 4 consecutive tokens
        bn = attn.norm
        pooled = (pooled - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        ref = _mhsa(_linear(x[0], attn.q), _linear(pooled, attn.k), _linear(pooled, attn.v), attn.num_heads)
    torch.testing.assert_close(out, _linear(ref, attn.proj), rtol=1e-10, atol=1e-10)


_FEATURE_CASES = [
    ("pvt_v2_b0", 64, dict(depths=(1, 1, 1, 1)), "NCHW"),
    ("pvt_v2_b2_li", 64, dict(depths=(1, 1, 1, 1)), "NCHW"),
    ("twins_pcpvt_small", 64, dict(depths=(2, 1, 1, 1)), "NCHW"),
    ("twins_svt_small", 64, dict(depths=(2, 2, 2, 2)), "NCHW"),  # 16x16 map in 7-windows: padding path
    ("sequencer2d_s", 56, dict(layers=(1, 1, 1, 1)), "NHWC"),
    ("nextvit_small", 64, dict(depths=(1, 1, 5, 1)), "NCHW"),
]


@pytest.mark.parametrize("name,size,kwargs,fmt", _FEATURE_CASES, ids=[c[0] for c in _FEATURE_CASES])
def test_features_only_maps(name: str, size: int, kwargs: dict, fmt: str) -> None:
    with torch.device("meta"):  # built on meta and given the conformance fill: no slow random init
        model = visionzoo.create_model(name, **kwargs)
    model = model.to_empty(device="cpu").eval()
    init_non_persistent_buffers(model)
    fill_model(model)
    feats = create_feature_model(copy.deepcopy(model)).eval()  # the family's wrapper, same weights
    x = make_input([3, size, size], 1)
    with torch.no_grad():
        maps = feats(x)
        ref = model.forward_intermediates(x, indices=feats.feature_info.out_indices, output_fmt=fmt,
                                          intermediates_only=True)
    assert len(maps) == len(feats.feature_info.out_indices)
    for m, r, chs, red in zip(maps, ref, feats.feature_info.channels(), feats.feature_info.reduction()):
        if fmt == "NHWC":
            assert m.shape == (1, size // red, size // red, chs)
        else:
            assert m.shape[1] == chs and m.shape[-1] == -(-size // red)
        torch.testing.assert_close(m, r)
    # every wrapper resolves the reference's feature module names (Twins: the 'block.<i>' taps)
    with torch.no_grad():
        hooked = create_feature_model(copy.deepcopy(model), feature_cls="hook").eval()
        for m, r in zip(hooked(x), maps):
            torch.testing.assert_close(m, r)


def test_sequencer_default_levels_and_nchw() -> None:
    feats = visionzoo.create_model("sequencer2d_s", features_only=True, layers=(1, 1, 1, 1), output_fmt="NCHW").eval()
    assert feats.feature_info.out_indices == (0, 1, 2)
    with torch.no_grad():
        maps = feats(torch.randn(1, 3, 56, 56))
    assert [tuple(m.shape) for m in maps] == [(1, 192, 8, 8), (1, 384, 4, 4), (1, 384, 4, 4)]
