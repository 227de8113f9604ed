"""Behaviour of the Vision Transformer family beyond the fixtures: attention paths, resampling of
position embeddings and patch kernels at load time, dynamic sizes, intermediates/features,
gradient checkpointing and DeiT's distillation head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

import visionzoo
from visionzoo.layers.config import set_layer_config
from visionzoo.layers.patch_embed import resample_patch_embed
from visionzoo.layers.pos_embed import build_sincos2d_pos_embed, resample_abs_pos_embed
from visionzoo.models.deit import VisionTransformerDistilled
from visionzoo.models.vision_transformer import VisionTransformer


def _tiny(**kw) -> VisionTransformer:
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=5)
    args.update(kw)
    return VisionTransformer(**args).eval()


def _set_fused(model: torch.nn.Module, fused: bool) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


@pytest.mark.parametrize("kw", [
    dict(),
    dict(global_pool="map", class_token=False, reg_tokens=2),
    dict(attn_type="diff", class_token=False, global_pool="avg", init_values=1e-5),
    dict(block_fn="parallel_scaling", qkv_bias=False, qk_norm=True, norm_layer="rmsnorm"),
    dict(block_fn="diff_parallel_scaling", class_token=False, global_pool="avg"),
    dict(block_fn="parallel_things", init_values=1e-5),
    dict(block_fn="res_post", class_token=False, global_pool="avg"),
    dict(scale_attn_norm=True, scale_mlp_norm=True, qk_norm=True, global_pool="avg"),
    dict(mlp_layer="swiglu", norm_layer="rmsnorm", embed_norm=True, pre_norm=True),
])
def test_fused_and_explicit_attention_agree(kw):
    torch.manual_seed(0)
    model = _tiny(**kw)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        _set_fused(model, False)
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)


def test_layer_config_switch_selects_explicit_path():
    with set_layer_config(fused_attn=False):
        model = _tiny()
    assert not any(getattr(m, "fused_attn", False) for m in model.modules())
    assert _tiny().blocks[0].attn.fused_attn


def test_builds_on_meta_and_materialises():
    with torch.device("meta"):
        model = visionzoo.create_model("vit_tiny_patch16_224", pos_embed="sincos")
    assert model.pos_embed.is_meta
    model = model.to_empty(device="cpu")
    from visionzoo.builder import init_non_persistent_buffers
    init_non_persistent_buffers(model)
    expected = build_sincos2d_pos_embed((14, 14), 192)
    torch.testing.assert_close(model.pos_embed[0, 1:], expected)
    assert not model.pos_embed.requires_grad


def _save_checkpoint(model: torch.nn.Module, tmp_path) -> str:
    path = tmp_path / "weights.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def test_load_224_checkpoint_into_384_model(tmp_path):
    torch.manual_seed(0)
    src = visionzoo.create_model("vit_tiny_patch16_224").eval()
    path = _save_checkpoint(src, tmp_path)
    model = visionzoo.create_model("vit_tiny_patch16_224", pretrained=True, img_size=384,
                                   pretrained_cfg_overlay=dict(file=path)).eval()
    assert model.pos_embed.shape == (1, 1 + 24 * 24, 192)
    # class-token row kept, grid resampled bicubically
    torch.testing.assert_close(model.pos_embed[:, :1], src.pos_embed[:, :1])
    expected = resample_abs_pos_embed(src.pos_embed.detach(), (24, 24), num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.detach(), expected)
    torch.testing.assert_close(model.blocks[3].mlp.fc1.weight, src.blocks[3].mlp.fc1.weight)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 384, 384)).shape == (1, 1000)


def test_load_with_new_patch_size_resamples_kernel(tmp_path):
    torch.manual_seed(0)
    src = visionzoo.create_model("vit_tiny_patch16_224").eval()
    path = _save_checkpoint(src, tmp_path)
    model = visionzoo.create_model("vit_tiny_patch16_224", pretrained=True, patch_size=8,
                                   pretrained_cfg_overlay=dict(file=path))
    assert model.patch_embed.proj.weight.shape == (192, 3, 8, 8)
    assert model.pos_embed.shape == (1, 1 + 28 * 28, 192)


def test_patch_kernel_resample_preserves_tokens_when_upsampling():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 8, 8)
    w_new = resample_patch_embed(w, (12, 12))
    x = torch.randn(5, 3, 8, 8)
    x_up = F.interpolate(x, size=(12, 12), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(F.conv2d(x_up, w_new), F.conv2d(x, w), rtol=1e-4, atol=1e-4)


def test_dynamic_img_size_and_pad():
    torch.manual_seed(0)
    static = _tiny()
    dynamic = _tiny(dynamic_img_size=True)
    dynamic.load_state_dict(static.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dynamic(x), static(x))
        assert dynamic(torch.randn(2, 3, 48, 24)).shape == (2, 5)
        maps = dynamic.forward_intermediates(torch.randn(1, 3, 48, 24), intermediates_only=True)
        assert maps[-1].shape == (1, 32, 6, 3)
    with pytest.raises(ValueError):
        static(torch.randn(1, 3, 48, 24))
    padded = _tiny(dynamic_img_size=True, dynamic_img_pad=True)
    with torch.no_grad():
        maps = padded.forward_intermediates(torch.randn(1, 3, 30, 41), intermediates_only=True)
    assert maps[0].shape == (1, 32, 4, 6)


def test_forward_intermediates_and_prune():
    torch.manual_seed(0)
    model = _tiny(reg_tokens=2, depth=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert len(maps) == 4 and maps[0].shape == (2, 32, 4, 4)
        nlc = model.forward_intermediates(x, indices=[1, -1], output_fmt="NLC", intermediates_only=True)
        assert [m.shape for m in nlc] == [(2, 16, 32)] * 2
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        torch.testing.assert_close(normed[0].flatten(2).transpose(1, 2), final[:, 3:])
        with_prefix = model.forward_intermediates(x, indices=[2], intermediates_only=True, return_prefix_tokens=True)
        assert with_prefix[0][1].shape == (2, 3, 32)
        early, _ = model.forward_intermediates(x, indices=[1], stop_early=True)
        assert early.shape == final.shape
    taken = model.prune_intermediate_layers([1])
    assert taken == [1] and len(model.blocks) == 2
    assert isinstance(model.head, torch.nn.Identity)


def test_features_only_vit():
    model = visionzoo.create_model("vit_tiny_patch16_224", features_only=True).eval()
    assert model.feature_info.channels() == [192, 192, 192]
    assert model.feature_info.reduction() == [16, 16, 16]
    assert len(model.model.blocks) == 12
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(1, 192, 14, 14)] * 3
    # the reference wrapper's layout (FeatureGetterNet): the model nested as ``model.``
    assert "model.blocks.11.attn.qkv.weight" in model.state_dict() and "model.head.weight" not in model.state_dict()
    sub = visionzoo.create_model("test_vit3", features_only=True, out_indices=(1, 3)).eval()
    assert len(sub.model.blocks) == 4 and sub.model.attn_pool is None
    with torch.no_grad():
        assert [tuple(m.shape) for m in sub(torch.randn(1, 3, 160, 160))] == [(1, 96, 10, 10)] * 2


def test_grad_checkpointing_recomputes_blocks_and_matches_grads():
    torch.manual_seed(0)
    model = _tiny().train()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    calls = []
    model.blocks[1].register_forward_pre_hook(lambda *a: calls.append(1))
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    assert len(calls) == 2  # forward + recomputation in backward
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-5, atol=1e-6)


def test_reset_classifier_and_pooling():
    model = _tiny(global_pool="map", class_token=False)
    model.reset_classifier(3, "avg")
    assert model.attn_pool is None
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ValueError):
        model.reset_classifier(3, "token")
    with pytest.raises(ValueError):
        _tiny(global_pool="bogus")


def test_deit_distilled_head_average():
    torch.manual_seed(0)
    model = visionzoo.create_model("deit_tiny_distilled_patch16_224", img_size=64).eval()
    assert isinstance(model, VisionTransformerDistilled) and model.num_prefix_tokens == 2
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = (model.head(feats[:, 0]) + model.head_dist(feats[:, 1])) / 2
        torch.testing.assert_close(model(x), expected)
    model.train().set_distilled_training(True)
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2
    model.reset_classifier(10)
    assert model.head_dist.out_features == 10
