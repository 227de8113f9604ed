"""Family behaviour of MetaFormer, RepViT, EdgeNeXt, EfficientFormerV2, SHViT and RDNet: the token
mixers against naive reference computations, re-parameterisation (directly and through
``visionzoo.optimize``), distillation heads."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import visionzoo
from visionzoo.models.metaformer import (IdentityMixer, MetaFormer, MetaFormerBlock, Pooling, SepConv, StarReLU,
                                         TokenAttention)
from visionzoo.models.repvit import RepVggDw, RepVit


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


# --- MetaFormer token mixers ------------------------------------------------------------------

def test_pooling_mixer_is_neighbourhood_mean_minus_input():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = Pooling(1)(x)
    # corner: mean of its 2x2 neighbourhood (padding not counted), minus itself
    assert y[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4 - 0)
    # interior: mean of the full 3x3 window
    assert y[0, 0, 1, 1].item() == pytest.approx(sum([0, 1, 2, 4, 5, 6, 8, 9, 10]) / 9 - 5)


def test_starrelu_formula():
    act = StarReLU()
    x = torch.linspace(-2, 2, 9)
    torch.testing.assert_close(act(x), 0.8944 * F.relu(x) ** 2 - 0.4472)


def test_sepconv_mixer_matches_explicit_convolutions():
    torch.manual_seed(0)
    m = SepConv(4)
    x = torch.randn(2, 4, 5, 5)
    h = F.conv2d(x, m.pwconv1.weight)
    h = m.act1.scale * F.relu(h) ** 2 + m.act1.bias
    h = F.conv2d(h, m.dwconv.weight, padding=3, groups=8)
    torch.testing.assert_close(m(x), F.conv2d(h, m.pwconv2.weight))


def test_attention_mixer_matches_naive_attention():
    torch.manual_seed(0)
    m = TokenAttention(64).eval()  # 2 heads of 32
    x = torch.randn(2, 3, 4, 64)  # channels-last map
    t = x.reshape(2, 12, 64)
    q, k, v = (t @ m.qkv.weight.t()).split(64, dim=-1)
    outs = []
    for h in range(2):
        s = slice(32 * h, 32 * (h + 1))
        a = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(32), dim=-1)
        outs.append(a @ v[..., s])
    ref = (torch.cat(outs, -1) @ m.proj.weight.t()).reshape(2, 3, 4, 64)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


def test_identity_mixer_block_only_runs_the_mlp():
    torch.manual_seed(0)
    assert torch.equal(IdentityMixer(8)(x := torch.randn(1, 8, 3, 3)), x)
    block = MetaFormerBlock(8, "identity").eval()
    # x + mixer(norm(x)) with the identity mixer is x + norm(x)
    y1 = x + block.norm1(x)
    torch.testing.assert_close(block(x), y1 + block.mlp(block.norm2(y1)))


def test_res_scale_and_layer_scale_enter_the_residual():
    torch.manual_seed(0)
    block = MetaFormerBlock(8, "pool", layer_scale_init=0.5, res_scale_init=2.0).eval()
    x = torch.randn(1, 8, 4, 4)
    y1 = 2.0 * x + 0.5 * block.token_mixer(block.norm1(x))
    torch.testing.assert_close(block(x), 2.0 * y1 + 0.5 * block.mlp(block.norm2(y1)))


def test_caformer_stages_mix_by_type():
    model = MetaFormer(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), token_mixers=("sepconv", "sepconv", "attention",
                                                                                  "attention"), num_classes=5)
    kinds = [type(s.blocks[0].token_mixer) for s in model.stages]
    assert kinds == [SepConv, SepConv, TokenAttention, TokenAttention]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)


# --- RepViT ------------------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_repvgg_dw_reparameterize_is_exact(legacy):
    torch.manual_seed(0)
    m = RepVggDw(6, legacy=legacy).eval()
    _randomise_bn(m)
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        ref = m(x)
        m.reparameterize()
        out = m(x)
    assert isinstance(m.reparam_conv, nn.Conv2d) and m.reparam_conv.groups == 6
    assert not hasattr(m, "conv") and not hasattr(m, "conv1")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _tiny_repvit(**kw) -> RepVit:
    return RepVit(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), num_classes=5, **kw).eval()


@pytest.mark.parametrize("legacy", [False, True])
def test_optimize_reparameterizes_repvit(legacy):
    torch.manual_seed(0)
    model = _tiny_repvit(legacy=legacy)
    _randomise_bn(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    opt = visionzoo.optimize(model, backend="torch", dtype=torch.float32, channels_last=False, example=x)
    assert opt.report["reparameterized"] >= 6
    assert all(m.reparam_conv is not None for m in model.modules() if isinstance(m, RepVggDw))
    out = opt(x)
    assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item() + 1e-6


def test_repvit_distilled_heads_average_in_eval_and_split_in_training():
    torch.manual_seed(0)
    model = _tiny_repvit()
    _randomise_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        expect = (model.head.head(pooled) + model.head.head_dist(pooled)) / 2
        torch.testing.assert_close(model(x), expect)
        model.set_distilled_training(True)
        model.train()
        y, y_dist = model(x)
        assert y.shape == y_dist.shape == (2, 5)
    model.reset_classifier(3)
    assert model.get_classifier().out_features == model.head.head_dist.l.out_features == 3
    assert model.head.distilled_training


def test_repvit_registered_model_builds_and_reparameterizes():
    model = visionzoo.create_model("repvit_m0_9", num_classes=4).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
        n = visionzoo.optimize(model, backend="torch", dtype=torch.float32, channels_last=False, example=x)(x)
    assert (n - ref).abs().max().item() <= 1e-4 * ref.abs().max().item() + 1e-5


# --- EdgeNeXt ----------------------------------------------------------------------------------

def test_edgenext_sdta_matches_naive_split_conv_and_channel_attention():
    SplitTransposeBlock = pytest.importorskip("visionzoo.models.edgenext").SplitTransposeBlock

    torch.manual_seed(0)
    blk = SplitTransposeBlock(10, num_scales=3, num_heads=2, use_pos_emb=True, ls_init_value=0.5).eval()
    x = torch.randn(1, 10, 3, 4)
    # Res2Net-style split: groups of ceil(10/3)=4,4,2; group i>0 adds group i-1's conv output first
    a, b, c = x[:, :4], x[:, 4:8], x[:, 8:]
    a = blk.convs[0](a)
    b = blk.convs[1](b + a)
    t = torch.cat([a, b, c], 1).flatten(2).transpose(1, 2) + blk.pos_embd(1, 3, 4).flatten(2).transpose(1, 2)
    # cross-covariance attention: a (d x d) map per head over channels, from token-normalised q, k
    q, k, v = (blk.norm_xca(t) @ blk.xca.qkv.weight.t() + blk.xca.qkv.bias).split(10, dim=-1)
    heads = []
    for h in range(2):
        s = slice(5 * h, 5 * (h + 1))
        qh, kh, vh = q[0, :, s].t(), k[0, :, s].t(), v[0, :, s].t()  # [d, N]
        attn = (F.normalize(qh, dim=-1) @ F.normalize(kh, dim=-1).t() * blk.xca.temperature[h]).softmax(-1)
        heads.append((attn @ vh).t())
    t = t + 0.5 * blk.xca.proj(torch.cat(heads, -1)[None])
    t = 0.5 * blk.mlp(blk.norm(t))
    ref = x + t.transpose(1, 2).reshape(1, 10, 3, 4)
    torch.testing.assert_close(blk(x), ref, rtol=1e-5, atol=1e-5)


def test_edgenext_downsampling_encoder_adds_to_the_strided_conv():
    ConvEncoder = pytest.importorskip("visionzoo.models.edgenext").ConvEncoder

    blk = ConvEncoder(8, kernel_size=5, conv_bias=False, in_chs=4).eval()
    x = torch.randn(1, 4, 8, 8)
    y = blk.conv_dw(x)
    ref = y + (blk.mlp(blk.norm(y.permute(0, 2, 3, 1))) * blk.gamma).permute(0, 3, 1, 2)
    torch.testing.assert_close(blk(x), ref)
    assert blk(x).shape == (1, 8, 4, 4)


# --- EfficientFormerV2 -------------------------------------------------------------------------

def _tiny_effv2():
    from visionzoo.models.efficientformer_v2 import EfficientFormerV2

    return EfficientFormerV2(embed_dims=(8, 16, 24, 32), mlp_ratios=((2,), (2,), (2, 2), (2, 2)),
                             num_attn=(0, 0, 1, 1), img_size=64, num_classes=5).eval()


def test_efficientformerv2_distilled_heads_average_in_eval_and_split_in_training():
    torch.manual_seed(0)
    model = _tiny_effv2()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model(x), (model.head(pooled) + model.head_dist(pooled)) / 2)
        model.set_distilled_training(True)
        model.train()
        y, y_dist = model(x)
    assert y.shape == y_dist.shape == (2, 5)


def test_efficientformerv2_strided_attention_upsamples_back():
    from visionzoo.models.efficientformer_v2 import Attention2d, Attention2dDownsample

    attn = Attention2d(16, key_dim=4, num_heads=2, resolution=8, stride=2).eval()
    assert attn.attention_biases.shape == (2, 16)  # 4x4 grid after the stride
    assert attn(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)
    down = Attention2dDownsample(16, 24, key_dim=4, num_heads=2, resolution=8).eval()
    assert down.attention_bias_idxs.shape == (16, 64)  # 4x4 queries over 8x8 keys
    assert down(torch.randn(1, 16, 8, 8)).shape == (1, 24, 4, 4)


# --- SHViT -------------------------------------------------------------------------------------

def test_shvit_single_head_attention_on_a_channel_split():
    from visionzoo.models.shvit import SingleHeadAttention

    torch.manual_seed(0)
    m = SingleHeadAttention(12, qk_dim=4, pdim=5).eval()
    _randomise_bn(m)
    x = torch.randn(2, 12, 3, 3)
    x1 = m.pre_norm(x[:, :5]).flatten(2).transpose(1, 2)  # [B, N, pdim]
    qkv = m.qkv(m.pre_norm(x[:, :5])).flatten(2).transpose(1, 2)
    q, k, v = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
    attn = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1)  # one head, scale 1/sqrt(4)
    y1 = (attn @ v).transpose(1, 2).reshape(2, 5, 3, 3)
    ref = m.proj(torch.cat([y1, x[:, 5:]], 1))  # untouched channels rejoin before the projection
    assert x1.shape == (2, 9, 5)
    torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)


# --- RDNet -------------------------------------------------------------------------------------

def test_rdnet_dense_stage_concatenates_every_block_output():
    from visionzoo.models.rdnet import DenseStage

    torch.manual_seed(0)
    stage = DenseStage(8, num_blocks=3, growth_rate=4, ese=True, dp_rates=[0.0] * 3).eval()
    for blk in stage:
        nn.init.constant_(blk.gamma, 0.5)
    x = torch.randn(1, 8, 6, 6)
    y1 = stage.dense_block0(x)
    y2 = stage.dense_block1(torch.cat([x, y1], 1))
    y3 = stage.dense_block2(torch.cat([x, y1, y2], 1))
    out = stage(x)
    assert out.shape == (1, 8 + 3 * 4, 6, 6)
    torch.testing.assert_close(out, torch.cat([x, y1, y2, y3], 1))
    torch.testing.assert_close(y1, 0.5 * stage.dense_block0.layers(x))
