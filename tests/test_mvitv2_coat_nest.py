"""Family behaviour of MViTv2, CoaT and NesT on tiny tensors (issue 19).

* MViTv2: pooling attention shrinks the query / key grids by their strides (class token kept),
  and the decomposed relative position bias equals the bias read from explicit per-pair offsets;
* CoaT: factorized attention equals the naive computation (keys soft-maxed over the tokens,
  then ``k^T v`` read by the queries); the convolutional relative position term equals per-head
  depthwise convolutions of the values times the queries (zero for the class token); a parallel
  block adds to each scale the other scales' attention outputs bilinearly resized to it; the
  position encoders are shared by a stage's serial blocks and the parallel blocks, the parallel
  MLP by the three scales; ``features_only`` reads levels 2-4 after the parallel blocks;
* NesT: blockify / deblockify are inverse and a block holds one square patch of the grid.
"""
from __future__ import annotations

import pytest
import torch

from visionzoo.layers.rel_pos_bias import decomposed_rel_pos
import torch.nn.functional as F

from visionzoo.models.coat import CoaTParallel, ConvRelPosEnc, ParallelBlock, factorized_attention
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


def test_coat_conv_rel_pos_enc_equals_per_head_convs():
    torch.manual_seed(0)
    ch, windows, size = 2, {3: 1, 5: 2}, (4, 5)
    crpe = ConvRelPosEnc(ch, 3, windows).double()
    q, v = (torch.randn(2, 3, 1 + 20, ch, dtype=torch.float64) for _ in range(2))
    out = crpe(q, v, size)
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))  # class token: no position term
    head_kernel = [(0, 0), (1, 1), (1, 1)]  # (conv, first head of that conv) for heads 0..2
    for h, (ci, first) in enumerate(head_kernel):
        conv = crpe.conv_list[ci]
        k = conv.kernel_size[0]
        lo = (h - first) * ch
        v_img = v[:, h, 1:].transpose(1, 2).reshape(2, ch, *size)
        ref = F.conv2d(v_img, conv.weight[lo:lo + ch], conv.bias[lo:lo + ch], padding=k // 2, groups=ch)
        torch.testing.assert_close(out[:, h, 1:], q[:, h, 1:] * ref.flatten(2).transpose(1, 2))


def test_coat_parallel_block_cross_scale_sum():
    torch.manual_seed(0)
    dim, sizes = 16, [(8, 8), (4, 4), (2, 2)]
    crpes = [ConvRelPosEnc(dim // 2, 2, {3: 1, 5: 1}) for _ in range(3)]
    blk = ParallelBlock(dim, 2, 2.0, crpes).eval()
    assert blk.mlp2 is blk.mlp3 is blk.mlp4  # one MLP for the three scales
    outs = [torch.randn(1, 1 + h * w, dim) for h, w in sizes]
    for i, o in zip((2, 3, 4), outs):  # attention outputs fixed: only the cross-scale sum is left
        getattr(blk, f"factoratt_crpe{i}").forward = lambda x, size, o=o: o
    xs = [torch.zeros(1, 1 + h * w, dim) for h, w in sizes]
    blk.mlp2.forward = lambda x: torch.zeros_like(x)
    with torch.no_grad():
        y2, y3, y4 = blk(*xs, *sizes)

    def resized(o, src, dst):
        g = o[:, 1:].transpose(1, 2).reshape(1, dim, *src)
        return F.interpolate(g, size=dst, mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)

    for y, t in zip((y2, y3, y4), range(3)):
        img = sum(resized(o, s, sizes[t]) if j != t else o[:, 1:] for j, (o, s) in enumerate(zip(outs, sizes)))
        torch.testing.assert_close(y[:, 1:], img, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y[:, :1], sum(o[:, :1] for o in outs))  # class tokens add up too


def test_coat_parallel_sharing_and_features():
    torch.manual_seed(0)
    m = CoaTParallel(num_classes=10, embed_dims=(8, 16, 16, 16), serial_depths=(1, 1, 1, 1), parallel_depth=2,
                     num_heads=8, mlp_ratios=(2, 2, 2, 2)).eval()
    for blk in m.parallel_blocks:
        for i in (2, 3, 4):
            assert getattr(blk, f"factoratt_crpe{i}").crpe is getattr(m, f"crpe{i}")
            assert getattr(m, f"serial_blocks{i}")[0].cpe is getattr(m, f"cpe{i}")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = m(x)
        feats = m.forward_intermediates(x, intermediates_only=True)
        xs, sizes = m._serial(x)
        x2, x3, x4 = m._parallel(xs[1], xs[2], xs[3], sizes)
    assert logits.shape == (2, 10)
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]
    for f, t in zip(feats[1:], (x2, x3, x4)):  # levels 2-4: the scales after the parallel blocks
        torch.testing.assert_close(f, t[:, 1:].transpose(1, 2).reshape(f.shape))


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
