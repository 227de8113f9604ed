"""Family-specific behaviour of the hierarchical transformers: Swin V2 (both layouts), TinyViT,
Hiera and SAM 2's Hiera-Det.

Small configurations (few blocks, small images) keep every test to a second or two.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.layers.cosine_window_attention import log_relative_coords, swin_v2_coords_table
from visionzoo.layers.hiera_utils import max_pool_tokens
from visionzoo.models.hiera import reroll, unroll
from visionzoo.models.hieradet_sam2 import HieraDet
from visionzoo.models.swin_transformer_v2 import SwinTransformerV2
from visionzoo.models.swin_transformer_v2_cr import SwinTransformerV2Cr
from visionzoo.models.tiny_vit import TinyVit

torch.manual_seed(0)


def _small_v2(**kw) -> SwinTransformerV2:
    args = dict(img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5)
    return SwinTransformerV2(**{**args, **kw}).eval()


# --- Swin V2: continuous position bias -------------------------------------------------------------
def test_swin_v2_coords_table_is_log_spaced_and_normalised_by_the_pretrained_window():
    own = swin_v2_coords_table((8, 8))
    assert own.shape == (15 * 15, 2)
    # the largest offset (7) of an 8-window maps to 8 * 7 / 7 = 8 -> log2(9) / log2(8)
    assert torch.isclose(own.abs().max(), torch.tensor(math.log2(9) / 3))
    # fine-tuned at 16 from a 12 window: offsets beyond the pretrained range exceed that value
    ft = swin_v2_coords_table((16, 16), (12, 12))
    assert ft.abs().max() > own.abs().max()
    assert torch.allclose(ft.abs().max(), torch.tensor(math.log2(8 * 15 / 11 + 1) / 3))


def test_swin_v2_set_input_size_reuses_weights_at_another_window_and_image():
    model = _small_v2()
    x = torch.randn(1, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y64 = model(x)
    model.set_input_size(img_size=96, window_size=6)
    # no table to resample: the same parameters, only the derived buffers changed
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in before.items()}
    attn = model.layers[0].blocks[0].attn
    assert attn.window_size == (6, 6) and attn.relative_coords_table.shape == (11 * 11, 2)
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 5)
    model.set_input_size(img_size=64, window_size=4)
    torch.testing.assert_close(model(x), y64)


def test_swin_v2_checkpoint_filter_converts_the_microsoft_layout():
    model = _small_v2()
    sd = model.state_dict()
    original = {}
    for k, v in sd.items():  # Microsoft layout: merging at the end of the previous stage, plain head
        if k.startswith("head.fc."):
            k = k.replace("head.fc.", "head.")
        elif ".downsample." in k:
            _, i, rest = k.split(".", 2)
            k = f"layers.{int(i) - 1}.{rest}"
        original[k] = v
    original["layers.0.blocks.0.attn.relative_coords_table"] = torch.zeros(1)
    original["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(1)
    out = SwinTransformerV2.checkpoint_filter_fn(original, model)
    assert set(out) == set(sd)
    fresh = _small_v2()
    fresh.load_state_dict(out)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(fresh(x), model(x))


def test_swin_v2_scaled_cosine_logits_are_bounded():
    """Cosine logits times exp(min(logit_scale, log 100)): huge activations cannot saturate."""
    model = _small_v2()
    attn = model.layers[0].blocks[0].attn
    with torch.no_grad():
        attn.logit_scale.fill_(10.0)  # clamped to log(100)
    x = torch.randn(4, 16, 16)
    torch.testing.assert_close(attn(x * 1000), attn(x * 1000))
    assert torch.isfinite(attn(x * 1e6)).all()


# --- Swin V2 cr ----------------------------------------------------------------------------------------
def test_swin_v2_cr_extra_norms_and_nchw_output():
    model = SwinTransformerV2Cr(img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 6, 2),
                                num_heads=(1, 2, 2, 4), extra_norm_period=3, num_classes=0).eval()
    with_norm3 = [(i, j) for i, s in enumerate(model.stages) for j, b in enumerate(s.blocks)
                  if isinstance(b.norm3, torch.nn.LayerNorm)]
    assert with_norm3 == [(2, 2), (2, 5), (3, 1)]  # every 3rd block; the last block stands in for a final norm
    y = model.forward_features(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 128, 2, 2)
    ns = SwinTransformerV2Cr(img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 2, 2),
                             num_heads=(1, 2, 2, 4), extra_norm_stage=True)
    assert all(isinstance(s.blocks[-1].norm3, torch.nn.LayerNorm) for s in ns.stages)


def test_swin_v2_cr_meta_coords_and_window_change():
    coords = log_relative_coords((3, 3))
    assert coords.shape == (81, 2)
    # pair (query 0 = (0, 0), key 8 = (2, 2)): offset query - key = (-2, -2) -> -ln 3
    torch.testing.assert_close(coords[8], torch.full((2,), -math.log(3.0)))
    model = SwinTransformerV2Cr(img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 2, 2),
                                num_heads=(1, 2, 2, 4)).eval()
    model.set_input_size(img_size=96, window_size=3)
    assert model(torch.randn(1, 3, 96, 96)).shape == (1, 1000)


# --- TinyViT ---------------------------------------------------------------------------------------------
def _small_tiny_vit(window_sizes=(7, 7, 14, 7)) -> TinyVit:
    return TinyVit(embed_dims=(16, 32, 32, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                   window_sizes=window_sizes, num_classes=3).eval()


def test_tiny_vit_resamples_attention_biases_for_other_windows():
    src, dst = _small_tiny_vit(), _small_tiny_vit((12, 12, 24, 12))
    out = TinyVit.checkpoint_filter_fn(src.state_dict(), dst)
    assert out["stages.2.blocks.0.attn.attention_biases"].shape == (2, 24 * 24)
    dst.load_state_dict(out)
    assert dst(torch.randn(1, 3, 384, 384)).shape == (1, 3)


def test_tiny_vit_pads_maps_that_are_not_whole_windows():
    model = _small_tiny_vit()
    feats = model.forward_intermediates(torch.randn(1, 3, 160, 160), intermediates_only=True)
    assert [f.shape[-1] for f in feats] == [40, 20, 10, 5]  # 20 and 10 are padded to 21 and 14


def test_tiny_vit_offset_bias_is_shared_by_equal_offsets():
    idx = _small_tiny_vit().stages[1].blocks[0].attn.attention_bias_idxs
    # tokens (0, 0)->(1, 2) and (3, 3)->(2, 1): the same |dy|, |dx|
    assert idx[0, 1 * 7 + 2] == idx[3 * 7 + 3, 2 * 7 + 1] == 1 * 7 + 2


# --- Hiera -------------------------------------------------------------------------------------------------
def test_hiera_unroll_reroll_roundtrip_and_pooling_is_2x2_max():
    x = torch.randn(2, 16 * 16, 5)
    sched = [(2, 2)] * 3
    u = unroll(x, (16, 16), sched)
    torch.testing.assert_close(reroll(u, (16, 16), sched), x.reshape(2, 16, 16, 5))
    # the first group of 4 is the finest 2x2 offset: pooling it is a 2x2 max-pool of the grid
    pooled = max_pool_tokens(u, 4)
    ref = F.max_pool2d(x.reshape(2, 16, 16, 5).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    torch.testing.assert_close(reroll(pooled, (8, 8), sched[1:]), ref)


def test_hiera_mask_unit_attention_is_local():
    model = visionzoo.create_model("hiera_tiny_224", img_size=128, stages=(1, 1, 1, 1), num_classes=0).eval()
    blk = model.blocks[0]  # mask-unit attention over 8x8-token units of the 32x32 grid
    x = torch.randn(1, 32 * 32, 96)
    sched = model.unroll_schedule
    u = unroll(x, (32, 32), sched)
    x2 = x.clone().reshape(1, 32, 32, 96)
    x2[:, 0, 0] += 1.0  # a token of the top-left unit
    u2 = unroll(x2.reshape(1, -1, 96), (32, 32), sched)
    with torch.no_grad():
        diff = (reroll(blk(u2), (32, 32), sched) - reroll(blk(u), (32, 32), sched)).abs().sum(-1)[0]
    assert diff[:8, :8].max() > 0 and diff[8:].max() == 0 and diff[:, 8:].max() == 0


def test_hiera_features_are_raster_ordered_maps():
    model = visionzoo.create_model("hiera_tiny_224", num_classes=0).eval()
    x = torch.randn(1, 3, 224, 224)
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
    # the last map, flattened in raster order, is forward_features' token sequence
    torch.testing.assert_close(maps[-1].flatten(2).transpose(1, 2), model.forward_features(x))


# --- Hiera-Det (SAM 2) ----------------------------------------------------------------------------------------
def test_hieradet_nhwc_features_and_nchw_levels():
    model = HieraDet(stages=(1, 1, 2, 1), global_att_blocks=(3,), num_classes=0).eval()
    x = torch.randn(1, 3, 128, 128)
    assert model.forward_features(x).shape == (1, 4, 4, 768)
    maps = visionzoo.create_model("sam2_hiera_tiny", features_only=True, pretrained=False)(x)
    assert [tuple(m.shape) for m in maps] == [(1, 96, 32, 32), (1, 192, 16, 16), (1, 384, 8, 8), (1, 768, 4, 4)]


def test_hieradet_checkpoint_filter_takes_the_sam2_trunk():
    model = HieraDet(stages=(1, 1, 1, 1), global_att_blocks=(), num_classes=0)
    sd = {f"image_encoder.trunk.{k}": v for k, v in model.state_dict().items()}
    sd["image_encoder.neck.convs.0.conv.weight"] = torch.zeros(1)
    sd["memory_encoder.x"] = torch.zeros(1)
    out = HieraDet.checkpoint_filter_fn({"model": sd}, model)
    assert list(out) == list(model.state_dict())


@pytest.mark.parametrize("window", [0, 4])
def test_hieradet_window_vs_global_attention(window: int):
    model = HieraDet(stages=(1, 1, 1, 1), global_att_blocks=(0,) if window == 0 else (),
                     window_spec=(4, 4, 4, 4), num_classes=0).eval()
    blk = model.blocks[0]
    x = torch.randn(1, 8, 8, 96)
    x2 = x.clone()
    x2[:, 0, 0] += 1.0
    with torch.no_grad():
        diff = (blk(x2) - blk(x)).abs().sum(-1)[0]
    assert (diff[4:, 4:].max() > 0) == (window == 0)
