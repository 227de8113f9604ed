"""Family behaviour of FocalNet / DaViT / GC ViT beyond the fixture conformance checks: the
attention-replacement ops against naive step-by-step computations, and features_only maps
(small widths and inputs, same code paths)."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.models.davit import ChannelAttention
from visionzoo.models.focalnet import FocalModulation
from visionzoo.models.gcvit import GlobalContextVitBlock, WindowAttentionGlobal

SMALL = {
    "focalnet_tiny_lrf": dict(embed_dim=8, depths=(1, 1, 1, 1)),
    "davit_tiny": dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 4, 8), window_size=4),
    "davit_base_fl": dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64), num_heads=(1, 2, 4, 8), window_size=4),
    "gcvit_xxtiny": dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), img_size=64),
}


def _randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module.eval()


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- FocalNet: focal modulation ------------------------------------------------------------------
def _focal_reference(m: FocalModulation, x: torch.Tensor, levels: int, normalize: bool) -> torch.Tensor:
    """The paper's equations, one level at a time, with explicit convolutions."""
    c = x.shape[1]
    y = F.conv2d(x, m.f.weight, m.f.bias)
    q, ctx, gates = y[:, :c], y[:, c:2 * c], y[:, 2 * c:]
    assert gates.shape[1] == levels + 1
    agg = torch.zeros_like(ctx)
    for lvl in range(levels):
        k = 3 + 2 * lvl  # focal_window 3, focal_factor 2
        w = m.focal_layers[lvl][0].weight
        assert w.shape[-1] == k
        ctx = F.gelu(F.conv2d(ctx, w, padding=k // 2, groups=c))  # each level refines the previous one
        agg = agg + ctx * gates[:, lvl:lvl + 1]
    agg = agg + F.gelu(ctx.mean((2, 3), keepdim=True)) * gates[:, levels:levels + 1]
    if normalize:
        agg = agg / (levels + 1)
    modulator = F.conv2d(agg, m.h.weight, m.h.bias)
    return F.conv2d(q * modulator, m.proj.weight, m.proj.bias)


@pytest.mark.parametrize("levels,normalize", [(2, False), (3, False), (3, True)])
def test_focal_modulation_matches_step_by_step(levels: int, normalize: bool) -> None:
    m = _randomize(FocalModulation(6, levels, focal_window=3, normalize_modulator=normalize))
    assert m.kernel_sizes == [3 + 2 * i for i in range(levels)]
    x = _x(2, 6, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _focal_reference(m, x, levels, normalize), rtol=1e-5, atol=1e-5)


def test_focal_modulation_gates_select_levels() -> None:
    """With gate logits forced to pick one level, the modulator is that level's context alone."""
    dim, levels = 4, 2
    m = _randomize(FocalModulation(dim, levels))
    x = _x(1, dim, 6, 6)
    with torch.no_grad():
        ctx = F.conv2d(x, m.f.weight[dim:2 * dim], m.f.bias[dim:2 * dim])
        ctxs = []
        for layer in m.focal_layers:
            ctx = layer(ctx)
            ctxs.append(ctx)
        ctxs.append(F.gelu(ctx.mean((2, 3), keepdim=True)).expand_as(ctx))
        for pick in range(levels + 1):
            gates = torch.zeros(1, levels + 1, 6, 6)
            gates[:, pick] = 1.0
            base = F.conv2d(x, m.f.weight[dim:2 * dim], m.f.bias[dim:2 * dim])
            torch.testing.assert_close(m.modulator(base, gates), m.h(ctxs[pick]), rtol=1e-5, atol=1e-6)
        # gates summing contexts: all-ones gates give the sum of every level
        torch.testing.assert_close(m.modulator(base, torch.ones(1, levels + 1, 6, 6)), m.h(sum(ctxs)),
                                   rtol=1e-5, atol=1e-5)


# --- DaViT: channel group attention --------------------------------------------------------------
def _channel_attn_reference(m: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """Per image, per channel group: a d x d attention between the group's channels."""
    b, n, c = x.shape
    heads, d = m.num_heads, c // m.num_heads
    qkv = x @ m.qkv.weight.t() + m.qkv.bias
    out = torch.zeros(b, n, c)
    for i in range(b):
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            q, k, v = qkv[i, :, sl], qkv[i, :, c + h * d:c + (h + 1) * d], qkv[i, :, 2 * c + h * d:2 * c + (h + 1) * d]
            if m.v2:  # Florence-2: softmax(q^T k / sqrt(N)) applied to the values' channels
                a = torch.softmax(q.t() @ k / n ** 0.5, dim=-1)
                out[i, :, sl] = (a @ v.t()).t()
            else:  # DaViT: softmax(k^T v / sqrt(d)) applied to the queries' channels
                a = torch.softmax(k.t() @ v / d ** 0.5, dim=-1)
                out[i, :, sl] = (a @ q.t()).t()
    return out @ m.proj.weight.t() + m.proj.bias


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("fused", [False, True])
def test_davit_channel_attention_matches_naive(v2: bool, fused: bool) -> None:
    m = _randomize(ChannelAttention(12, num_heads=3, v2=v2))
    m.fused_attn = fused
    x = _x(2, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _channel_attn_reference(m, x), rtol=1e-4, atol=1e-5)


def test_davit_channel_attention_is_global_and_token_equivariant() -> None:
    """Every output token depends on all tokens (global), and permuting tokens permutes outputs."""
    m = _randomize(ChannelAttention(8, num_heads=2))
    x = _x(1, 9, 8)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(m(x[:, perm]), y[:, perm], rtol=1e-5, atol=1e-6)
        x2 = x.clone()
        x2[:, -1] += 1.0
        assert (m(x2)[:, 0] - y[:, 0]).abs().max() > 1e-4  # token 0 sees a change at the last token


def test_davit_spatial_block_is_window_local() -> None:
    """A change inside one 4x4 window reaches, through attention, only that window (plus the 3x3
    position-encoding halo): the far corner is untouched."""
    model = _randomize(visionzoo.create_model("davit_tiny", **SMALL["davit_tiny"]))
    blk = model.stages[0].blocks[0][0]  # spatial block of the first pair
    x = _x(1, 8, 16, 16)
    x2 = x.clone()
    x2[:, :, 1, 1] += 1.0
    with torch.no_grad():
        d = (blk(x2) - blk(x)).abs().amax(1)[0]
    assert d[:4, :4].max() > 0 and d[8:, 8:].max() == 0


# --- GC ViT: global vs local window attention ----------------------------------------------------
def test_gcvit_global_query_shapes_and_levels() -> None:
    model = visionzoo.create_model("gcvit_xxtiny", **SMALL["gcvit_xxtiny"]).eval()
    x = _x(2, 3, 64, 64)
    with torch.no_grad():
        y = model.stem(x)
        for stage in model.stages:
            inp, y = y, stage.downsample(y)
            q = stage.global_block(y)
            ws = stage.blocks[0].window_size
            assert q.shape == (2, y.shape[1], *ws)  # one window-sized map of global tokens per image
            pools = sum(isinstance(mod, torch.nn.MaxPool2d) for mod in stage.global_block.blocks)
            assert 2 ** pools == y.shape[-1] // ws[0]
            assert [b.attn.use_global for b in stage.blocks] == [False, True]
            assert stage.blocks[0].attn.qkv.out_features == 3 * y.shape[1]
            assert stage.blocks[1].attn.qkv.out_features == 2 * y.shape[1]
            y = stage(inp)


def _window_attn_reference(attn: WindowAttentionGlobal, windows: torch.Tensor, q_img: torch.Tensor | None,
                           per_image: int) -> torch.Tensor:
    b, n, c = windows.shape
    h, d = attn.num_heads, c // attn.num_heads
    bias = attn.rel_pos.get_bias()[0]
    out = torch.zeros_like(windows)
    for w in range(b):
        proj = windows[w] @ attn.qkv.weight.t() + attn.qkv.bias
        if q_img is not None:
            q, k, v = q_img[w // per_image].reshape(n, c), proj[:, :c], proj[:, c:]
        else:
            q, k, v = proj[:, :c], proj[:, c:2 * c], proj[:, 2 * c:]
        for hh in range(h):
            sl = slice(hh * d, (hh + 1) * d)
            a = torch.softmax(q[:, sl] @ k[:, sl].t() * d ** -0.5 + bias[hh], dim=-1)
            out[w, :, sl] = a @ v[:, sl]
    return out @ attn.proj.weight.t() + attn.proj.bias


@pytest.mark.parametrize("use_global", [False, True])
def test_gcvit_window_attention_matches_naive(use_global: bool) -> None:
    attn = _randomize(WindowAttentionGlobal(8, 2, (3, 3), use_global=use_global))
    per_image = 4
    windows = _x(2 * per_image, 9, 8)
    q_img = _x(2, 3, 3, 8, seed=5)
    with torch.no_grad():
        ours = attn(windows, q_img)
        ref = _window_attn_reference(attn, windows, q_img if use_global else None, per_image)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_gcvit_global_block_uses_the_global_query_only() -> None:
    """Global blocks read the query map (each image its own); local blocks ignore it."""
    x = _x(2, 6, 6, 8)
    q1, q2 = _x(2, 3, 3, 8, seed=7), _x(2, 3, 3, 8, seed=8)
    for use_global in (False, True):
        blk = _randomize(GlobalContextVitBlock(8, num_heads=2, window_size=(3, 3), use_global=use_global))
        with torch.no_grad():
            a, b = blk(x, q1), blk(x, q2)
            q_mixed = torch.cat([q1[:1], q2[1:]])
            mixed = blk(x, q_mixed)
        assert (a - b).abs().max() > 1e-4 if use_global else torch.equal(a, b)
        torch.testing.assert_close(mixed[:1], a[:1])  # image 0 saw only its own global query
        torch.testing.assert_close(mixed[1:], b[1:])


# --- features_only ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SMALL))
def test_features_only_maps(name: str) -> None:
    kw = SMALL[name]
    torch.manual_seed(0)
    full = visionzoo.create_model(name, **kw).eval()
    feat = visionzoo.create_model(name, features_only=True, out_indices=(1, 3), **kw).eval()
    feat.load_state_dict({k: v for k, v in _flat_named(full).items() if k in feat.state_dict()})
    x = _x(1, 3, 64, 64)
    chs = [info["num_chs"] for info in full.feature_info]
    assert feat.feature_info.channels() == [chs[1], chs[3]]
    assert feat.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        maps = feat(x)
        ref = full.forward_intermediates(x, indices=(1, 3), intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, chs[1], 8, 8), (1, chs[3], 2, 2)]
    for m, r in zip(maps, ref):
        torch.testing.assert_close(m, r)


def _flat_named(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict under the list wrapper's flattened names (``stages.0.`` -> ``stages_0.``)."""
    return {re.sub(r"^(layers|stages)\.(\d+)\.", r"\1_\2.", k): v for k, v in model.state_dict().items()}
