"""ViT variants: relative-position ViT (bias MLP / table, shared bias, resampling on load,
set_input_size), hybrid CNN stems, SAM's windowed encoder and DeepSeek's vision tower (tiny models)."""
from __future__ import annotations

import pytest
import torch

from visionzoo.layers.rel_pos_bias import RelPosBias, RelPosMlp, relative_log_coords
from visionzoo.models.vision_transformer_relpos import VisionTransformerRelPos


def _relpos(**kw) -> VisionTransformerRelPos:
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5,
                init_values=1e-5)
    args.update(kw)
    torch.manual_seed(0)
    return VisionTransformerRelPos(**args).eval()


# --------------------------------------------------------------------------------------------
# relative position ViT
# --------------------------------------------------------------------------------------------

def test_log_coords_are_symmetric_and_log_spaced():
    c = relative_log_coords((3, 4))
    assert c.shape == (5 * 7, 2)
    grid = c.reshape(5, 7, 2)
    torch.testing.assert_close(grid[2, 3], torch.zeros(2))  # zero offset in the middle
    torch.testing.assert_close(grid[0, 3, 0], -torch.log(torch.tensor(3.0)))  # dy = -2 -> -ln 3
    torch.testing.assert_close(grid.flip(0).flip(1), -grid)


@pytest.mark.parametrize("cls", [RelPosMlp, RelPosBias])
def test_bias_depends_on_offset_only_and_prefix_is_zero(cls):
    torch.manual_seed(0)
    m = cls((3, 3), num_heads=2, prefix_tokens=1)
    if isinstance(m, RelPosBias):
        torch.nn.init.normal_(m.relative_position_bias_table)
    b = m.get_bias()[0]
    assert b.shape == (2, 10, 10)
    assert b[:, 0].abs().sum() == 0 and b[:, :, 0].abs().sum() == 0
    # tokens (r, c) -> 1 + 3r + c; pairs with the same offset share the bias
    tok = lambda r, c: 1 + 3 * r + c  # noqa: E731
    torch.testing.assert_close(b[:, tok(0, 0), tok(1, 2)], b[:, tok(1, 0), tok(2, 2)])
    assert not torch.allclose(b[:, tok(0, 0), tok(1, 2)], b[:, tok(0, 0), tok(2, 1)])


def test_shared_rel_pos_is_one_module():
    m = _relpos(shared_rel_pos=True, rel_pos_dim=16, init_values=None)
    keys = list(m.state_dict())
    assert keys.index("shared_rel_pos.mlp.fc1.weight") < keys.index("blocks.0.norm1.weight")
    assert not any(".attn.rel_pos." in k for k in keys)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    # the shared bias reaches every block: changing it changes the output
    x = torch.randn(1, 3, 32, 32)
    ref = m(x)
    with torch.no_grad():
        m.shared_rel_pos.mlp.fc2.bias.add_(torch.tensor([5.0, -5.0]))
        m.shared_rel_pos.mlp.fc2.weight.mul_(10.0)
    assert not torch.allclose(m(x), ref)


@pytest.mark.parametrize("kw", [dict(), dict(class_token=True, global_pool="token"),
                                dict(block_fn="res_post", fc_norm=False)])
def test_mlp_bias_checkpoint_loads_at_new_size(kw):
    """The bias MLP is grid-independent: a 32 px checkpoint loads strictly into a 48 px model, and
    equals the 32 px model moved with set_input_size."""
    src = _relpos(**kw)
    dst = _relpos(img_size=48, **kw)
    sd = VisionTransformerRelPos.checkpoint_filter_fn(src.state_dict(), dst)
    dst.load_state_dict(sd, strict=True)
    src.set_input_size(img_size=48)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(src(x), dst(x))
        feats = src.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [f.shape for f in feats] == [(2, 32, 6, 6)] * 2


def test_bias_table_resampled_on_load():
    src = _relpos(rel_pos_type="bias", class_token=True)
    with torch.no_grad():
        for blk in src.blocks:
            torch.nn.init.normal_(blk.attn.rel_pos.relative_position_bias_table)
    dst = _relpos(rel_pos_type="bias", class_token=True, img_size=56)
    sd = VisionTransformerRelPos.checkpoint_filter_fn(src.state_dict(), dst)
    assert sd["blocks.0.attn.rel_pos.relative_position_bias_table"].shape == (13 * 13, 2)
    dst.load_state_dict(sd, strict=True)
    assert dst(torch.randn(1, 3, 56, 56)).shape == (1, 5)
    # same grid: untouched
    same = VisionTransformerRelPos.checkpoint_filter_fn(src.state_dict(), src)
    torch.testing.assert_close(same["blocks.1.attn.rel_pos.relative_position_bias_table"],
                               src.blocks[1].attn.rel_pos.relative_position_bias_table)
    # set_input_size resamples the same way as loading
    src.set_input_size(img_size=56)
    torch.testing.assert_close(src.blocks[0].attn.rel_pos.relative_position_bias_table,
                               dst.blocks[0].attn.rel_pos.relative_position_bias_table)


def test_relpos_set_input_size_patch_size():
    m = _relpos()
    m.set_input_size(img_size=48, patch_size=12)
    assert m.patch_embed.grid_size == (4, 4)
    assert m.feature_info[0]["reduction"] == 12
    assert m(torch.randn(1, 3, 48, 48)).shape == (1, 5)


def test_relpos_rejects_absolute_and_dynamic_options():
    with pytest.raises(ValueError):
        _relpos(dynamic_img_size=True)
    with pytest.raises(ValueError):
        _relpos(rel_pos_type="nope")


def test_relpos_meta_build_rebuilds_buffers():
    with torch.device("meta"):
        m = _relpos(class_token=True, global_pool="token")
    m = m.to_empty(device="cpu")
    m.init_non_persistent_buffers()
    rp = m.blocks[0].attn.rel_pos
    torch.testing.assert_close(rp.rel_coords_log, relative_log_coords((4, 4)))
    assert int(rp.relative_position_index.max()) == 7 * 7 - 1


# --------------------------------------------------------------------------------------------
# hybrid CNN stems
# --------------------------------------------------------------------------------------------

from functools import partial  # noqa: E402

from visionzoo.models.resnet import ResNet  # noqa: E402
from visionzoo.models.resnetv2 import ResNetStage  # noqa: E402
from visionzoo.models.vision_transformer_hybrid import (VisionTransformerHybrid, bit_backbone,  # noqa: E402
                                                        resnet_backbone)


def _hybrid(**kw) -> VisionTransformerHybrid:
    args = dict(backbone=partial(bit_backbone, (1, 1), stem_chs=32, channels=(128, 256)), img_size=64,
                embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
    args.update(kw)
    torch.manual_seed(0)
    return VisionTransformerHybrid(**args).eval()


def test_hybrid_reuses_our_cnns():
    import visionzoo

    m = visionzoo.create_model("vit_small_resnet50d_s16_224", pretrained=False)
    assert isinstance(m.patch_embed.backbone, ResNet)
    assert isinstance(m.patch_embed.backbone.layer4, torch.nn.Identity)  # cut after stage 3 (stride 16)
    net, stride, chs = resnet_backbone((2, 2, 2, 2), 4)
    assert (stride, chs) == (32, 2048) and isinstance(net.layer4, torch.nn.Sequential)
    h = _hybrid()
    assert all(isinstance(s, ResNetStage) for s in h.patch_embed.backbone.stages)
    assert h.patch_embed.patch_size == (8, 8) and h.patch_embed.grid_size == (8, 8)
    assert h.pos_embed.shape == (1, 65, 32)


def test_hybrid_set_input_size_and_checkpoint_resample():
    src = _hybrid()
    dst = _hybrid(img_size=96)
    sd = VisionTransformerHybrid.checkpoint_filter_fn(src.state_dict(), dst)
    assert sd["pos_embed"].shape == (1, 1 + 12 * 12, 32)
    dst.load_state_dict(sd, strict=True)
    src.set_input_size(img_size=96)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(src(x), dst(x))
        feats = src.forward_intermediates(x, indices=1, intermediates_only=True)
    assert feats[0].shape == (1, 32, 12, 12)
    with pytest.raises(ValueError):
        src(torch.randn(1, 3, 64, 64))


def test_hybrid_dynamic_img_size():
    m = _hybrid(dynamic_img_size=True)
    with torch.no_grad():
        for size in ((64, 64), (96, 80)):
            x = torch.randn(1, 3, *size)
            assert m(x).shape == (1, 5)
            feats = m.forward_intermediates(x, indices=1, intermediates_only=True)
            assert feats[0].shape == (1, 32, size[0] // 8, size[1] // 8)


# --------------------------------------------------------------------------------------------
# SAM image encoder
# --------------------------------------------------------------------------------------------

from visionzoo.layers.rel_pos_bias import decomposed_rel_pos, get_rel_pos  # noqa: E402
from visionzoo.models.vision_transformer_sam import VisionTransformerSAM  # noqa: E402


def _sam(**kw) -> VisionTransformerSAM:
    args = dict(img_size=64, patch_size=8, embed_dim=32, depth=2, num_heads=2, window_size=4,
                global_attn_indexes=(1,), neck_chans=16, num_classes=5)
    args.update(kw)
    torch.manual_seed(0)
    return VisionTransformerSAM(**args).eval()


def test_decomposed_rel_pos_matches_explicit_sum():
    torch.manual_seed(0)
    rh, rw, q = torch.randn(5, 4), torch.randn(7, 4), torch.randn(2, 12, 4)
    bias = decomposed_rel_pos(q, rh, rw, (3, 4), (3, 4)).reshape(2, 3, 4, 3, 4)
    i, j, k, m = 2, 1, 0, 3  # query (2, 1), key (0, 3): offsets dy = 2, dx = -2
    expect = q[:, i * 4 + j] @ rh[i - k + 2] + q[:, i * 4 + j] @ rw[j - m + 3]
    torch.testing.assert_close(bias[:, i, j, k, m], expect)
    # another size reads a resampled table with the same end points
    assert get_rel_pos(6, 6, rh).shape == (6, 6, 4)


def test_sam_windows_global_blocks_and_neck():
    m = _sam()
    assert m.blocks[0].window_size == 4 and m.blocks[1].window_size == 0
    assert m.blocks[0].attn.rel_pos_h.shape == (7, 16) and m.blocks[1].attn.rel_pos_h.shape == (15, 16)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert m.forward_features(x).shape == (1, 16, 8, 8)
        assert m(x).shape == (1, 5)
        feats = m.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [f.shape for f in feats] == [(1, 32, 8, 8)] * 2
    # a window that does not divide the grid pads the map (6 px windows on an 8 x 8 grid)
    with torch.no_grad():
        assert _sam(window_size=6)(x).shape == (1, 5)


def test_sam_checkpoint_resampled_for_new_size():
    src = _sam()
    dst = _sam(img_size=96)
    sd = VisionTransformerSAM.checkpoint_filter_fn(src.state_dict(), dst)
    assert sd["pos_embed"].shape == (1, 12, 12, 32)
    assert sd["blocks.1.attn.rel_pos_w"].shape == (23, 16)  # global block: table of the new grid
    assert sd["blocks.0.attn.rel_pos_w"].shape == (7, 16)  # windowed block: unchanged
    dst.load_state_dict(sd, strict=True)
    with torch.no_grad():
        assert dst(torch.randn(1, 3, 96, 96)).shape == (1, 5)
    dyn = _sam(dynamic_img_size=True)
    dyn.load_state_dict(src.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(dyn(x), src(x))
        assert dyn(torch.randn(1, 3, 80, 96)).shape == (1, 5)


# --------------------------------------------------------------------------------------------
# DeepSeek vision tower
# --------------------------------------------------------------------------------------------

from visionzoo.models.deepseek_vit import DeepSeekEncoder, DeepSeekVit  # noqa: E402

_DS_TINY = dict(img_size=42, patch_size=7, embed_dim=32, depth=2, num_heads=2, mlp_hidden=48)


def test_deepseek_merge_tokens_groups_neighbourhoods():
    enc = DeepSeekEncoder(**_DS_TINY, aligner_dim=8)
    x = torch.arange(6 * 6, dtype=torch.float32).reshape(1, 36, 1).expand(1, 36, 32)
    merged = enc.merge_tokens(x, (6, 6))
    assert merged.shape == (1, 4, 9 * 32)
    # second merged token = rows 0..2, cols 3..5 of the grid, row-major
    assert merged[0, 1, ::32].tolist() == [3, 4, 5, 9, 10, 11, 15, 16, 17]
    assert enc.merge_tokens(torch.randn(1, 20, 32), (4, 5)).shape == (1, 4, 9 * 32)  # padded to 6 x 6


def test_deepseek_layouts():
    torch.manual_seed(0)
    enc = DeepSeekEncoder(**_DS_TINY, aligner_dim=8).eval()
    assert not any(k.startswith("blocks.0.mlp") and k.endswith("bias") for k in enc.state_dict())
    x = torch.randn(1, 3, 42, 42)
    with torch.no_grad():
        assert enc.forward_aligned(x).shape == (1, 4, 8)
    wrapped = DeepSeekVit(**_DS_TINY, use_aligner=True, aligner_dim=8, num_classes=3).eval()
    assert wrapped.num_features == 8 and wrapped.feature_info[0]["module"] == "encoder.blocks.0"
    with torch.no_grad():
        assert wrapped(x).shape == (1, 3)
        feats = wrapped.forward_intermediates(x, indices=1, intermediates_only=True)
    assert feats[0].shape == (1, 32, 6, 6)
    wrapped.prune_intermediate_layers(indices=1)
    assert wrapped.encoder.aligner is None
