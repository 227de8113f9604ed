"""Gemma 4 vision tower: split-axis 2-D RoPE against a naive per-position rotation, the
``(C, ph, pw)`` patch projection and factorised position table, 3x3 token pooling with the LM
scale and standardisation, clippable projections, and the ``blocks.<i>`` feature taps of the
``encoder.``-nested model."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.features import create_feature_model
from visionzoo.models.gemma4_vit import ClippableLinear, SplitAxisRope, apply_split_rope

TINY = dict(embed_dim=32, depth=2, num_heads=2, mlp_hidden=48, img_size=96)


def _model(name: str = "gemma4_vit_167m_enc", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    m = visionzoo.create_model(name, **{**TINY, **kw}).eval()
    with torch.no_grad():  # visible position table (init is small)
        for n, p in m.named_parameters():
            if "position_embedding_table" in n:
                p.normal_(0, 0.5)
    return m


def _naive_rope(x: torch.Tensor, grid: tuple[int, int], temperature: float) -> torch.Tensor:
    """Per token and per channel pair, an explicit 2x2 rotation: the first half of the head
    turns with the column index, the second with the row index; within a half of width ``h``,
    channels ``j`` and ``j + h/2`` pair up with frequency ``temperature ** (-j / (h/2))``."""
    d = x.shape[-1]
    half, nb = d // 2, d // 4
    out = x.clone()
    for t in range(grid[0] * grid[1]):
        pos = (t % grid[1], t // grid[1])  # (x, y)
        for axis in range(2):
            for j in range(nb):
                a = pos[axis] * temperature ** (-j / nb)
                i1, i2 = axis * half + j, axis * half + j + nb
                c, s = math.cos(a), math.sin(a)
                out[..., t, i1] = x[..., t, i1] * c - x[..., t, i2] * s
                out[..., t, i2] = x[..., t, i1] * s + x[..., t, i2] * c
    return out


@pytest.mark.parametrize("head_dim,grid", [(16, (3, 4)), (72, (2, 3))])
def test_rope_equals_naive_rotation(head_dim, grid):
    rope = SplitAxisRope(head_dim, grid=grid, temperature=100.0)
    x = torch.randn(2, 3, grid[0] * grid[1], head_dim, dtype=torch.float64)
    ours = apply_split_rope(x, rope.get_embed(list(grid)).double())
    torch.testing.assert_close(ours, _naive_rope(x, grid, 100.0), rtol=1e-6, atol=1e-6)
    # another grid than the cached one is computed on the fly, the same way
    other = rope.get_embed([grid[1], grid[0]])
    ref = SplitAxisRope(head_dim, grid=(grid[1], grid[0]), temperature=100.0).embed
    torch.testing.assert_close(other, ref)


def test_rope_scores_depend_on_offset_only():
    rope = SplitAxisRope(16, grid=(5, 5))
    emb = rope.embed.double()  # angles computed in float32: compare at float32 round-off below
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, dtype=torch.float64, generator=g), torch.randn(16, dtype=torch.float64, generator=g)
    qr = apply_split_rope(q.expand(25, 16), emb)
    kr = apply_split_rope(k.expand(25, 16), emb)
    s = qr @ kr.T  # [25, 25]
    # (r, c) -> (r + 1, c + 2) from two different starts
    torch.testing.assert_close(s[0 * 5 + 0, 1 * 5 + 2], s[2 * 5 + 1, 3 * 5 + 3], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(s[0, 1], s[0, 5])  # x and y offsets differ


def test_patch_embed_is_a_strided_projection_with_factorised_positions():
    m = _model()
    pe = m.patch_embed
    x = torch.rand(1, 3, 96, 64)
    tokens, grid = pe(x)
    assert grid == (6, 4)
    w = pe.input_proj.weight.reshape(32, 3, 16, 16)  # (C, ph, pw) flattening
    ref = F.conv2d(2 * x - 1, w, stride=16).flatten(2).transpose(1, 2)
    t = pe.position_embedding_table
    rows, cols = torch.arange(6).repeat_interleave(4), torch.arange(4).repeat(6)
    ref = ref + t[0, cols] + t[1, rows]  # table 0 by column, table 1 by row
    torch.testing.assert_close(tokens, ref, rtol=1e-5, atol=1e-5)


def test_pooling_averages_3x3_neighbourhoods():
    m = _model()
    x = torch.randn(2, 36, 32)
    pooled = m.pool_tokens(x, (6, 6))
    assert pooled.shape == (2, 4, 32)
    ref = x.reshape(2, 6, 6, 32)[:, 3:6, 0:3].mean((1, 2)) * math.sqrt(32)  # token (1, 0)
    torch.testing.assert_close(pooled[:, 2], ref)
    with torch.no_grad():
        out = m(torch.rand(1, 3, 96, 96))
    assert out.shape == (1, 4, 32)


def test_standardisation_applies_to_pooled_tokens():
    m = _model("gemma4_vit_570m_enc", embed_dim=32, num_heads=2)
    assert m.std_bias is not None and m.std_scale is not None
    x = torch.randn(1, 36, 32)
    base = m.pool_tokens(x, (6, 6))
    m.std_bias.fill_(1.0)
    m.std_scale.fill_(2.0)
    torch.testing.assert_close(m.pool_tokens(x, (6, 6)), (base - 1.0) * 2.0)


def test_clippable_linear_bounds():
    lin = ClippableLinear(4, 3, clip=True)
    x = torch.randn(5, 4) * 3
    torch.testing.assert_close(lin(x), lin.linear(x))  # +-inf bounds until a checkpoint sets them
    lin.input_min.fill_(-0.5)
    lin.input_max.fill_(0.25)
    lin.output_min.fill_(-0.1)
    lin.output_max.fill_(0.2)
    y = lin(x)
    torch.testing.assert_close(y, lin.linear(x.clamp(-0.5, 0.25)).clamp(-0.1, 0.2))
    assert y.min() >= -0.1 and y.max() <= 0.2
    lin.input_min.fill_(0.3)  # inverted bounds: torch.clamp's rule, the upper bound wins
    torch.testing.assert_close(lin(x), lin.linear(torch.full_like(x, 0.25)).clamp(-0.1, 0.2))
    assert not hasattr(ClippableLinear(4, 3), "input_min")  # no bounds without clipping


def test_nested_model_feature_taps():
    """The ``encoder.``-nested model names its levels ``blocks.<i>`` (the reference's names): every
    wrapper finds them, holds no extra weights, and gives the encoder's block outputs."""
    base = _model("gemma4_vit_167m")
    assert [f["module"] for f in base.feature_info] == ["blocks.0", "blocks.1"]
    assert not any(k.startswith("blocks.") for k in base.state_dict())
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        ref = base.encoder.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        outs = {}
        for cls in ("list", "dict", "hook", "getter"):
            w = create_feature_model(copy.deepcopy(base), feature_cls=cls, out_indices=(0, 1)).eval()
            got = w(x)
            outs[cls] = list(got.values()) if isinstance(got, dict) else got
    for cls in ("list", "dict", "getter"):
        for a, b in zip(outs[cls], ref):
            torch.testing.assert_close(a, b)
    for a, b in zip(outs["hook"], ref):  # hooks see the raw block tokens
        torch.testing.assert_close(a, b.flatten(2).transpose(1, 2))
