"""Family-specific behaviour of CPUBone: top/left-padded 2x2 convs, Lowtention against a naive
per-head computation, and the inference-time GroupNorm-affine folding (``reparameterize`` and
``visionzoo.optimize``)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import visionzoo

pytestmark = pytest.mark.skipif(not visionzoo.is_model("cpubone_nano"), reason="cpubone not registered")


def _randomize_norms(model: nn.Module) -> None:
    """Non-trivial norm affines and BN statistics, so folding them is actually exercised."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)) and m.affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _nano_and_reference(batch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = visionzoo.create_model("cpubone_nano").eval()
    _randomize_norms(model)
    x = torch.randn(batch, 3, 64, 64)
    with torch.no_grad():
        return model, x, model(x)


def test_2x2_stride1_conv_pads_top_left_and_keeps_size():
    from visionzoo.models.cpubone import ConvLayer

    torch.manual_seed(0)
    layer = ConvLayer(4, 8, 2, 1, groups=2, bias=True, norm=False).eval()
    x = torch.randn(1, 4, 7, 7)
    conv = layer.conv[1]
    ref = F.conv2d(F.pad(x, (1, 0, 1, 0)), conv.weight, conv.bias, groups=2)
    with torch.no_grad():
        y = layer(x)
    assert y.shape[-2:] == (7, 7)
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("stride,size", [(2, 8), (1, 5)])
def test_lowtention_equals_naive_attention(stride: int, size: int):
    """conv_proj -> per-head [q, k, v] from one 1x1 -> softmax(q k^T / sqrt(d)) v -> 1x1 -> nearest
    upsampling, computed token by token; the fused (SDPA) path gives the same."""
    from visionzoo.models.cpubone import ConvAttention

    torch.manual_seed(0)
    dim = 224  # 3 heads of 37: the head split does not divide dim / 2
    m = ConvAttention(dim, stride).eval()
    assert (m.num_heads, m.head_dim) == (3, 37)
    with torch.no_grad():
        m.conv_proj.norm.running_mean.normal_(0, 0.1)
        m.conv_proj.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, dim, size, size)
    with torch.no_grad():
        y = m(x)
        m.fused_attn = True
        torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-5)
        t = m.pwise(m.conv_proj(x))
        h, w = t.shape[-2:]
        heads = []
        for i in range(m.num_heads):
            chunk = t[:, i * 3 * m.head_dim:(i + 1) * 3 * m.head_dim].flatten(2)  # (B, 3d, L)
            q, k, v = chunk.split(m.head_dim, dim=1)
            att = torch.einsum("bdi,bdj->bij", q, k) / m.head_dim ** 0.5
            heads.append(torch.einsum("bij,bdj->bdi", att.softmax(-1), v))
        o = torch.cat(heads, 1).reshape(2, -1, h, w)
        o = m.upsampling[0](o)
        if stride > 1:
            o = o.repeat_interleave(stride, -2).repeat_interleave(stride, -1)
    assert y.shape == x.shape
    torch.testing.assert_close(y, o[..., :size, :size], rtol=1e-5, atol=1e-5)


def test_reparameterize_folds_groupnorm_affines_exactly():
    model, x, ref = _nano_and_reference(2)
    with torch.no_grad():
        fused = copy.deepcopy(model).reparameterize()
        out = fused(x)
    affine = [m for m in fused.modules() if isinstance(m, nn.GroupNorm) and m.affine]
    # every MLP norm and the stride-2 attention norms fold; only the padded stage-4 attention keeps its affine
    assert len(affine) == 2
    assert all(isinstance(b.total[0][0].main[1].conv_proj.conv, nn.Sequential)
               for b in fused.stages[3][1:])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # idempotent
        torch.testing.assert_close(fused.reparameterize()(x), ref, rtol=1e-5, atol=1e-5)


def test_optimize_reparameterizes_and_folds_bn():
    model, x, ref = _nano_and_reference(1)
    opt = visionzoo.optimize(copy.deepcopy(model), backend="torch", dtype=torch.float32, img_size=64)
    assert opt.report["reparameterized"] >= 1
    assert opt.report["folded_bn"] > 0 and opt.report["fused_attn_modules"] == 3
    assert not any(isinstance(m, nn.GroupNorm) and m.affine for m in opt.model.stages[2].modules())
    torch.testing.assert_close(opt(x), ref, rtol=1e-4, atol=1e-4)


def test_variant_local_blocks_and_norms():
    """Fused 2x2 local MBConvs below 256 channels; unfused ones at 256+, whose norms follow the
    variant suffix (bfrobust: both, dwnorm: depthwise only, plain: none)."""
    from visionzoo.models.cpubone import FusedMBConv, MBConv

    def local(name):
        with torch.device("meta"):
            m = visionzoo.create_model(name)
        return m.stages[2][1].total[1].main, m.stages[3][1].total[1].main

    s, d = local("cpubone_b0_bfrobust")
    assert isinstance(s, FusedMBConv) and isinstance(d, MBConv) and d.inverted_conv.conv.groups == 2
    assert isinstance(d.inverted_conv.norm, nn.BatchNorm2d) and isinstance(d.depth_conv.norm, nn.BatchNorm2d)
    _, d = local("cpubone_b1_dwnorm")
    assert isinstance(d.inverted_conv.norm, nn.Identity) and isinstance(d.depth_conv.norm, nn.BatchNorm2d)
    _, d = local("cpubone_b3")
    assert isinstance(d.inverted_conv.norm, nn.Identity) and isinstance(d.depth_conv.norm, nn.Identity)
    s, d = local("cpubone_nano")
    assert isinstance(s, FusedMBConv) and isinstance(d, FusedMBConv)
