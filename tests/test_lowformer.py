"""LowFormer behaviour: lowtention is softmax attention over the down-sampled tokens, blocks per
variant kind (B: norm + lowtention + MLP + local, E1/E2: local only, E3: lowtention + local),
features_only maps, gradient checkpointing and TorchScript."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.models.lowformer import VARIANTS, LowFormer, LowFormerBlock, Lowtention

_TINY = dict(widths=(8, 16, 32, 64, 128), depths=(0, 0, 0, 1, 1), head_widths=(64, 80), num_classes=10)


def _naive_lowtention(m: Lowtention, x: torch.Tensor) -> torch.Tensor:
    """The paper's operator written out: depthwise conv + BN (stride), 1x1 to per-head [q|k|v],
    per head and per query token a softmax over every down-sampled token, transposed conv back."""
    bn = m.conv_proj.norm
    y = F.conv2d(x, m.conv_proj.conv.weight, None, m.stride, m.conv_proj.conv.padding, groups=x.shape[1])
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    y = F.conv2d(y, m.pwise.weight)
    b, _, h, w = y.shape
    hd = m.head_dim
    outs = []
    for head in range(m.heads):
        chunk = y[:, head * 3 * hd:(head + 1) * 3 * hd].flatten(2)  # B, 3*hd, N
        q, k, v = chunk[:, :hd], chunk[:, hd:2 * hd], chunk[:, 2 * hd:]
        o = torch.zeros_like(q)
        for i in range(h * w):
            logits = torch.einsum("bc,bcn->bn", q[:, :, i], k) / hd ** 0.5
            o[:, :, i] = torch.einsum("bn,bcn->bc", logits.softmax(-1), v)
        outs.append(o)
    o = torch.cat(outs, 1).reshape(b, -1, h, w)
    return m.upsampling(o)


@pytest.mark.parametrize("dim,heads,kernel,stride,size", [(64, 1, 5, 2, 8), (128, 2, 3, 1, 5), (96, 3, 5, 2, 6)])
def test_lowtention_equals_naive_attention_on_downsampled_tokens(dim, heads, kernel, stride, size):
    torch.manual_seed(0)
    m = Lowtention(dim, heads, kernel, stride).eval()
    with torch.no_grad():
        m.conv_proj.norm.running_mean.uniform_(-0.1, 0.1)
        m.conv_proj.norm.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, dim, size, size)
    seen = []
    attend = m.attend
    m.attend = lambda q, k, v: (seen.append(tuple(k.shape)), attend(q, k, v))[1]
    with torch.no_grad():
        out = m(x)
        ref = _naive_lowtention(m, x)
    assert out.shape == x.shape  # resolution and width restored
    low = (size + stride - 1) // stride
    assert seen == [(2, heads, low * low, dim // 2 // heads)]  # attention over the down-sampled, half-width tokens
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_block_kinds_per_variant():
    def blocks(name):
        m = LowFormer(**{**dict(VARIANTS[name].args), **_TINY})
        return [b for b in m.stages[2] if isinstance(b, LowFormerBlock)]

    b = blocks("lowformer_b0")[0]
    assert isinstance(b.attn.main[1], Lowtention) and b.mlp is not None
    e3 = blocks("lowformer_e3")[0]
    assert isinstance(e3.attn.main, Lowtention) and e3.mlp is None
    e1 = blocks("lowformer_e1")[0]
    assert e1.attn is None and e1.mlp is None


def test_last_stage_attention_keeps_resolution_stage3_halves_it():
    m = LowFormer(**_TINY).eval()
    assert m.stages[2][1].attn.main[1].stride == 2 and m.stages[3][1].attn.main[1].stride == 1


@pytest.mark.parametrize("name", ["lowformer_b0", "lowformer_e2"])
def test_features_only_maps(name):
    kwargs = dict(depths=(1, 1, 1, 1, 1)) if name == "lowformer_e2" else dict(depths=(0, 0, 0, 1, 1))
    m = visionzoo.create_model(name, features_only=True, **kwargs).eval()
    with torch.no_grad():
        feats = m(torch.randn(1, 3, 96, 96))
    chans = m.feature_info.channels()
    assert [f.shape[1] for f in feats] == chans
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3]
    assert m.feature_info.reduction() == [4, 8, 16, 32]


def test_grad_checkpointing_same_output_and_grads():
    torch.manual_seed(0)
    m = LowFormer(**_TINY).train()
    x = torch.randn(2, 3, 32, 32)
    ref = m(x)
    ref.sum().backward()
    g_ref = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in m.stages)
    out = m(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for g, p in zip(g_ref, m.parameters()):
        torch.testing.assert_close(p.grad, g)


def test_torchscript_equal_outputs():
    m = LowFormer(**{**dict(VARIANTS["lowformer_e3"].args), **_TINY}).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(m)(x), m(x))
