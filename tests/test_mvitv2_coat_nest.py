"""Family behaviour of MViTv2, CoaT and NesT on tiny tensors (issue 19).

* MViTv2: pooling attention shrinks the query / key grids by their strides (class token kept),
  and the decomposed relative position bias equals the bias read from explicit per-pair offsets;
* CoaT: factorized attention equals the naive computation (keys soft-maxed over the tokens,
  then ``k^T v`` read by the queries);
* NesT: blockify / deblockify are inverse and a block holds one square patch of the grid.
"""
from __future__ import annotations

import pytest
import torch

from visionzoo.layers.rel_pos_bias import decomposed_rel_pos
from visionzoo.models.coat import factorized_attention
from visionzoo.models.mvitv2 import MultiScaleAttention
from visionzoo.models.nest import blockify, deblockify


@pytest.mark.parametrize("cls_token", [False, True])
@pytest.mark.parametrize("stride_q,stride_kv,q_size,kv_size", [(1, 4, (8, 8), (2, 2)), (2, 2, (4, 4), (4, 4)),
                                                                (2, 1, (4, 4), (8, 8))])
def test_mvitv2_pooling_attention_grids(cls_token, stride_q, stride_kv, q_size, kv_size):
    torch.manual_seed(0)
    attn = MultiScaleAttention(8, 16, 2, (8, 8), stride_q=stride_q, stride_kv=stride_kv,
                               has_cls_token=cls_token).eval()
    # the relative tables span the larger of the two grids
    assert attn.rel_pos_h.shape == (2 * max(q_size[0], kv_size[0]) - 1, 8)
    prefix = int(cls_token)
    x = torch.randn(2, prefix + 64, 8)
    with torch.no_grad():
        out, size = attn(x, (8, 8))
        k = attn.pool_k(torch.randn(2 * 2, 8, 8, 8))
    assert size == q_size
    assert out.shape == (2, prefix + q_size[0] * q_size[1], 16)
    assert tuple(k.shape[-2:]) == kv_size


def _explicit_bias(q: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, q_size, k_size) -> torch.Tensor:
    """Bias of every (query, key) pair from its own offsets on the common (finer) scale."""
    (qh, qw), (kh, kw) = q_size, k_size
    out = torch.zeros(q.shape[0], qh * qw, kh * kw)
    for i in range(qh):
        for j in range(qw):
            for a in range(kh):
                for b in range(kw):
                    dy = i * max(kh / qh, 1.0) - a * max(qh / kh, 1.0) + (kh - 1) * max(qh / kh, 1.0)
                    dx = j * max(kw / qw, 1.0) - b * max(qw / kw, 1.0) + (kw - 1) * max(qw / kw, 1.0)
                    qv = q[:, i * qw + j]
                    out[:, i * qw + j, a * kw + b] = qv @ rel_h[int(dy)] + qv @ rel_w[int(dx)]
    return out


@pytest.mark.parametrize("q_size,k_size", [((4, 4), (4, 4)), ((4, 6), (2, 3)), ((2, 3), (4, 6))])
def test_mvitv2_decomposed_rel_pos_equals_explicit_bias(q_size, k_size):
    torch.manual_seed(0)
    c = 5
    rel_h = torch.randn(2 * max(q_size[0], k_size[0]) - 1, c)
    rel_w = torch.randn(2 * max(q_size[1], k_size[1]) - 1, c)
    q = torch.randn(3, q_size[0] * q_size[1], c)
    fast = decomposed_rel_pos(q, rel_h, rel_w, q_size, k_size)
    torch.testing.assert_close(fast, _explicit_bias(q, rel_h, rel_w, q_size, k_size), rtol=1e-5, atol=1e-5)


def test_coat_factorized_attention_equals_naive():
    torch.manual_seed(0)
    b, heads, n, ch = 2, 3, 7, 4
    q, k, v = (torch.randn(b, heads, n, ch, dtype=torch.float64) for _ in range(3))
    naive = torch.zeros(b, heads, n, ch, dtype=torch.float64)
    for bi in range(b):
        for h in range(heads):
            ks = torch.exp(k[bi, h]) / torch.exp(k[bi, h]).sum(dim=0, keepdim=True)  # softmax over tokens
            context = torch.zeros(ch, ch, dtype=torch.float64)
            for m in range(n):
                context += torch.outer(ks[m], v[bi, h, m])  # sum_m softmax(k)_m^T v_m
            naive[bi, h] = q[bi, h] @ context
    torch.testing.assert_close(factorized_attention(q, k, v), naive)


def test_nest_blockify_deblockify_inverse():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 12, 5)
    blocks = blockify(x, 3)
    assert blocks.shape == (2, 16, 9, 5)
    # block t = (row, col) of the 4x4 block grid holds that 3x3 patch, row-major
    torch.testing.assert_close(blocks[:, 6].reshape(2, 3, 3, 5), x[:, 3:6, 6:9])
    torch.testing.assert_close(deblockify(blocks, 3), x)
    y = torch.randn(2, 4, 16, 5)
    torch.testing.assert_close(blockify(deblockify(y, 4), 4), y)
