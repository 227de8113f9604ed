"""NaFlexViT-specific behaviour: variable-resolution patch batches with masks, their
forward_intermediates, aspect-preserving position tables, attention pooling under padding, and
set_input_size (patch-size change)."""
from __future__ import annotations

import pytest
import torch

import visionzoo
from visionzoo.models.naflexvit import image_to_patch_batch

TINY = dict(embed_dim=64, depth=2, num_heads=2, num_classes=5)


def _model(name: str = "naflexvit_base_patch16_gap", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    m = visionzoo.create_model(name, **{**TINY, **kw}).eval()
    with torch.no_grad():  # non-trivial position tables and tokens (init is ~0)
        for p in m.embeds.parameters():
            p.normal_(0, 0.5)
    return m


@pytest.mark.parametrize("name", ["naflexvit_base_patch16_gap", "naflexvit_base_patch16_map",
                                  "naflexvit_base_patch16_parfac_gap", "naflexvit_base_patch16_radio_v3"])
def test_patch_batch_equals_image(name):
    """A single image as a NaFlex patch batch gives the image path's output."""
    model = _model(name)
    img = torch.randn(1, 3, 48, 80)
    batch = image_to_patch_batch([img[0]], 16)
    assert batch["patches"].shape == (1, 15, 768)
    with torch.no_grad():
        torch.testing.assert_close(model(batch), model(img), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["naflexvit_base_patch16_gap", "naflexvit_base_patch16_map"])
def test_padding_is_masked(name):
    """Images of different sizes batched with padding: each sample equals its own run."""
    model = _model(name)
    imgs = [torch.randn(3, 32, 96), torch.randn(3, 64, 48), torch.randn(3, 16, 16)]
    batch = image_to_patch_batch(imgs, 16, max_len=16)
    assert batch["patch_valid"].sum(1).tolist() == [12, 12, 1]
    with torch.no_grad():
        out = model(batch)
        for i, img in enumerate(imgs):
            torch.testing.assert_close(out[i], model(img[None])[0], rtol=1e-4, atol=1e-5)


def test_forward_intermediates_on_patch_batch():
    model = _model()
    imgs = [torch.randn(3, 32, 96), torch.randn(3, 64, 48)]
    batch = image_to_patch_batch(imgs, 16)
    with torch.no_grad():
        final, seqs = model.forward_intermediates(batch, indices=2, output_fmt="NLC")
        grids = model.forward_intermediates(batch, indices=[1], intermediates_only=True)
        ref = model.forward_intermediates(imgs[1][None], indices=[1], intermediates_only=True)
    assert final.shape == (2, 4 + 12, 64) and [s.shape for s in seqs] == [(2, 12, 64)] * 2
    assert [g.shape for g in grids[0]] == [(64, 2, 6), (64, 4, 3)]
    torch.testing.assert_close(grids[0][1], ref[0][0], rtol=1e-4, atol=1e-5)


def test_aspect_preserving_pos_embed():
    """``pos_embed_ar_preserving``: a wide grid reads the top rows of the square table."""
    model = _model("naflexvit_base_patch16_par_gap")
    e = model.embeds
    with torch.no_grad():
        wide, square = e.pos_grid((3, 9)), e.pos_grid((9, 9))
        torch.testing.assert_close(wide, square[:3])
        plain = _model("naflexvit_base_patch16_gap").embeds.pos_grid((3, 9))
    assert not torch.allclose(plain, square[:3])


def test_set_input_size_patch_size():
    model = _model()
    img = torch.randn(1, 3, 64, 64)
    model.set_input_size(img_size=128, patch_size=8)
    assert model.embeds.proj.in_features == 8 * 8 * 3 and model.feature_info[-1]["reduction"] == 8
    with torch.no_grad():
        assert model(img).shape == (1, 5)
        maps = model.forward_intermediates(img, indices=1, intermediates_only=True)
    assert maps[0].shape == (1, 64, 8, 8)


def test_features_only_and_reset():
    model = visionzoo.create_model("naflexvit_base_patch16_gap", features_only=True, out_indices=(0, 1), **{
        k: v for k, v in TINY.items() if k != "num_classes"})
    maps = model(torch.randn(1, 3, 64, 48))
    assert [m.shape for m in maps] == [(1, 64, 4, 3)] * 2
    m = _model("naflexvit_base_patch16_map")
    m.reset_classifier(0, "avg")
    assert m.attn_pool is None and m(torch.randn(1, 3, 32, 32)).shape == (1, 64)
