"""Family behaviour of CrossViT, VOLO and TNT (tiny configs, random weights)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.models.crossvit import CrossViT, MultiScaleBlock
from visionzoo.models.tnt import TNT, PixelEmbed, TNTBlock
from visionzoo.models.volo import OutlookAttention, Volo


def _tiny_crossvit(**kw) -> CrossViT:
    args = dict(img_size=48, img_scale=(1.0, 32 / 48), patch_size=(12, 16), embed_dim=(16, 32),
                depth=((1, 1, 0),) * 2, num_heads=(2, 2), mlp_ratio=(2.0, 2.0, 1.0), num_classes=5)
    args.update(kw)
    return CrossViT(**args).eval()


def _tiny_volo(**kw) -> Volo:
    args = dict(layers=(1, 1, 1, 1), img_size=64, embed_dims=(16, 32, 32, 32), num_heads=(2, 4, 4, 4),
                num_classes=5)
    args.update(kw)
    return Volo(**args).eval()


def _tiny_tnt(**kw) -> TNT:
    args = dict(img_size=32, patch_size=16, embed_dim=32, inner_dim=8, depth=2, num_heads_inner=2,
                num_heads_outer=4, num_classes=5)
    args.update(kw)
    return TNT(**args).eval()


def _normed_intermediates(model, size: int):
    """(final, maps, forward_features) of a seeded input, intermediates normed."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, norm=True)
        return final, maps, model.forward_features(x)


# ---- CrossViT ---------------------------------------------------------------------------------
def test_crossvit_fusion_updates_only_cls_tokens():
    torch.manual_seed(0)
    blk = MultiScaleBlock([16, 32], (1, 1, 0), (2, 4), (2.0, 2.0, 1.0)).eval()
    xs = [torch.randn(2, 17, 16), torch.randn(2, 5, 32)]
    with torch.no_grad():
        out = blk(xs)
        per_branch = [b(x) for b, x in zip(blk.blocks, xs)]
        for o, p in zip(out, per_branch):
            assert o.shape == p.shape
            torch.testing.assert_close(o[:, 1:], p[:, 1:])       # patch tokens: the branch's own blocks only
            assert not torch.allclose(o[:, :1], p[:, :1])         # CLS token: changed by fusion
        # branch 0's CLS token reads branch 1's patch tokens; branch 0's patch tokens do not
        xs2 = [xs[0], xs[1].clone()]
        xs2[1][:, 1:] += torch.randn_like(xs2[1][:, 1:])
        out2 = blk(xs2)
    assert not torch.allclose(out2[0][:, :1], out[0][:, :1])
    torch.testing.assert_close(out2[0][:, 1:], out[0][:, 1:])


def test_crossvit_branch_sees_resized_input_and_logits_average():
    torch.manual_seed(0)
    model = _tiny_crossvit()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        xs = model._embed(x)
        assert [t.shape[1] for t in xs] == [1 + 16, 1 + 4]   # 48/12 = 4x4 and 32/16 = 2x2 grids
        small = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False)
        ref = model.patch_embed[1](small) + model.pos_embed_1[:, 1:]
        torch.testing.assert_close(xs[1][:, 1:], ref)
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        per_branch = [h(f[:, 0]) for h, f in zip(model.head, feats)]
        torch.testing.assert_close(logits, (per_branch[0] + per_branch[1]) / 2)
        assert model.forward_head(feats, pre_logits=True).shape == (1, 48)


def test_crossvit_forward_intermediates_one_level_per_branch_and_block():
    torch.manual_seed(0)
    final, maps, feats = _normed_intermediates(_tiny_crossvit(), 48)
    assert [tuple(m.shape) for m in maps] == [(2, 16, 4, 4)] * 2 + [(2, 32, 2, 2)] * 2
    for b in range(2):
        torch.testing.assert_close(final[b], feats[b])
        last = maps[2 * b + 1].flatten(2).transpose(1, 2)
        torch.testing.assert_close(last, feats[b][:, 1:])
    # features_only: the reference's default levels (last block of each branch), both maps returned
    fm = visionzoo.create_model("crossvit_tiny_240", features_only=True).eval()
    assert fm.feature_info.channels() == [96, 192] and fm.feature_info.reduction() == [12, 17]
    with torch.no_grad():
        outs = fm(torch.randn(1, 3, 240, 240))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 20, 20), (1, 192, 14, 14)]


# ---- VOLO -------------------------------------------------------------------------------------
def _naive_outlook(attn: OutlookAttention, x: torch.Tensor) -> torch.Tensor:
    """Outlook attention position by position: weights from the (pooled) centre token, applied to
    its zero-padded k x k window of values, the results added back into the window."""
    b, hh, ww, c = x.shape
    k, s, p, heads = attn.kernel_size, attn.stride, attn.padding, attn.num_heads
    d = c // heads
    v = F.pad(attn.v(x).permute(0, 3, 1, 2), (p, p, p, p))                  # [B, C, H+2p, W+2p]
    out = torch.zeros(b, c, hh + 2 * p, ww + 2 * p)
    for i in range(math.ceil(hh / s)):
        for j in range(math.ceil(ww / s)):
            centre = x[:, i * s:(i + 1) * s, j * s:(j + 1) * s].mean(dim=(1, 2))   # avg pool (ceil mode)
            w = attn.attn(centre).reshape(b, heads, k * k, k * k)
            w = (w * attn.scale).softmax(dim=-1)
            win = v[:, :, i * s:i * s + k, j * s:j * s + k].reshape(b, heads, d, k * k)
            mixed = torch.einsum("bhqk,bhdk->bhdq", w, win).reshape(b, c, k, k)
            out[:, :, i * s:i * s + k, j * s:j * s + k] += mixed
    out = out[:, :, p:p + hh, p:p + ww].permute(0, 2, 3, 1)
    return attn.proj(out)


@pytest.mark.parametrize("size,stride", [(6, 2), (5, 2), (4, 1)])
def test_volo_outlook_attention_equals_naive(size, stride):
    torch.manual_seed(0)
    attn = OutlookAttention(8, num_heads=2, kernel_size=3, padding=1, stride=stride).eval()
    x = torch.randn(2, size, size, 8)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _naive_outlook(attn, x), rtol=1e-5, atol=1e-5)


def test_volo_token_labelling_head_and_intermediates():
    torch.manual_seed(0)
    model = _tiny_volo()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 1 + 4 * 4, 32)
        expected = model.head(feats[:, 0]) + 0.5 * model.aux_head(feats[:, 1:]).max(dim=1)[0]
        torch.testing.assert_close(model(x), expected)
        _, maps = model.forward_intermediates(x)
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(2, 16, 8, 8)] + [(2, 32, 4, 4)] * 3
    for m, n in zip(maps, nhwc):
        torch.testing.assert_close(m, n.permute(0, 3, 1, 2))
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, 32)


# ---- TNT --------------------------------------------------------------------------------------
def test_tnt_inner_and_outer_token_shapes():
    torch.manual_seed(0)
    model = _tiny_tnt()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pixel, patch = model._embed(x)
        assert pixel.shape == (2 * 4, 16, 8)     # [B * patches, 4x4 pixel tokens, inner width]
        assert patch.shape == (2, 1 + 4, 32)     # [B, cls + patches, outer width]
        for blk in model.blocks:
            assert isinstance(blk, TNTBlock)
            pixel, patch = blk(pixel, patch)
            assert pixel.shape == (8, 16, 8) and patch.shape == (2, 5, 32)
        _, maps = model.forward_intermediates(x, indices=[1])
    assert maps[0].shape == (2, 32, 2, 2)


@pytest.mark.parametrize("legacy", [False, True])
def test_tnt_pixel_embed_conv_per_patch_or_whole_image(legacy):
    torch.manual_seed(0)
    emb = PixelEmbed(img_size=32, patch_size=16, in_chans=3, in_dim=8, stride=4, legacy=legacy).eval()
    pos = torch.zeros(1, 8, 4, 4)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        tokens = emb(x, pos)                                         # [4, 16, 8]
        patch_1 = x[:, :, 0:16, 16:32]                               # second patch (row-major)
        if legacy:
            ref = emb.proj(x)[:, :, 0:4, 4:8]                        # whole-image conv, then cut
        else:
            ref = emb.proj(patch_1)                                  # conv on the patch alone
    torch.testing.assert_close(tokens[1], ref.reshape(8, 16).t())


def test_tnt_features_match_final_tokens():
    torch.manual_seed(0)
    final, maps, feats = _normed_intermediates(_tiny_tnt(), 32)
    torch.testing.assert_close(final, feats)
    torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), feats[:, 1:])
