"""Family behaviour of ConvNeXt / Swin beyond the fixture conformance checks (small, fast models)."""
from __future__ import annotations

import re

import pytest
import torch

import visionzoo
from visionzoo.layers.grn import GlobalResponseNorm
from visionzoo.layers.window_attention import (relative_position_index, resize_rel_pos_bias_table,
                                               shifted_window_mask, window_partition, window_reverse)
from visionzoo.models.convnext import ConvNeXt
from visionzoo.pretrained.load import load_checkpoint

SWIN = "swin_tiny_patch4_window7_224"
SMALL_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))  # tiny widths, same code paths


def _x(size: int, batch: int = 2, chans: int = 3) -> torch.Tensor:
    return torch.randn(batch, chans, size, size, generator=torch.Generator().manual_seed(0))


def _swin(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return visionzoo.create_model(SWIN, **SMALL_SWIN, **kwargs).eval()


# --- features_only -----------------------------------------------------------------------------
def test_convnext_features_only_subset() -> None:
    full = visionzoo.create_model("test_convnext")
    model = visionzoo.create_model("test_convnext", features_only=True, out_indices=(0, 2)).eval()
    assert model.feature_info.channels() == [24, 48]
    assert model.feature_info.reduction() == [4, 16]
    # the reference wrapper's layout: stem/stages children flattened (stages.0.x -> stages_0.x)
    keys = {re.sub(r"^(stem|stages)_(\d+)\.", r"\1.\2.", k) for k in model.state_dict()}
    assert keys < set(full.state_dict())
    assert not any(k.startswith(("stages.3.", "head.")) for k in keys)
    with torch.no_grad():
        maps = model(_x(64))
    assert [tuple(m.shape) for m in maps] == [(2, 24, 16, 16), (2, 48, 4, 4)]


def test_convnext_output_stride() -> None:
    model = visionzoo.create_model("test_convnext", output_stride=16, num_classes=5).eval()
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 16]
    # dilation keeps every weight shape: a stride-32 checkpoint loads unchanged
    model.load_state_dict(visionzoo.create_model("test_convnext", num_classes=5).state_dict())
    with torch.no_grad():
        maps = model.forward_intermediates(_x(64), intermediates_only=True)
        assert model(_x(64)).shape == (2, 5)
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 4]


def test_swin_features_only_layouts() -> None:
    nhwc = visionzoo.create_model(SWIN, **SMALL_SWIN, features_only=True).eval()
    nchw = visionzoo.create_model(SWIN, **SMALL_SWIN, features_only=True, out_indices=(1, 3),
                                  feature_kwargs=dict(output_fmt="NCHW")).eval()
    nchw.load_state_dict(nhwc.state_dict())
    assert nhwc.output_fmt == "NHWC" and nhwc.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        a, b = nhwc(_x(224, 1)), nchw(_x(224, 1))
    assert [tuple(m.shape) for m in a] == [(1, 56, 56, 16), (1, 28, 28, 32), (1, 14, 14, 64), (1, 7, 7, 128)]
    torch.testing.assert_close(b[0], a[1].permute(0, 3, 1, 2))
    torch.testing.assert_close(b[1], a[3].permute(0, 3, 1, 2))


# --- Swin: other image / window sizes ----------------------------------------------------------
def _tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith("relative_position_bias_table")}


@pytest.mark.parametrize("img_size,window_size,last_window", [(256, 8, 8), (160, 7, 5), (224, 7, 7)])
def test_swin_new_img_size_on_load(tmp_path, img_size: int, window_size: int, last_window: int) -> None:
    ref = _swin()
    path = tmp_path / "swin.pth"
    torch.save(ref.state_dict(), path)
    model = visionzoo.create_model(SWIN, **SMALL_SWIN, pretrained=True, img_size=img_size, window_size=window_size,
                                   pretrained_cfg_overlay=dict(file=str(path))).eval()
    tables = _tables(model)
    first = tables["layers.0.blocks.0.attn.relative_position_bias_table"]
    last = tables["layers.3.blocks.0.attn.relative_position_bias_table"]
    assert first.shape == ((2 * window_size - 1) ** 2, 1)
    assert last.shape == ((2 * last_window - 1) ** 2, 8)
    if window_size == 7:  # same window: the table is loaded unchanged
        torch.testing.assert_close(first, _tables(ref)["layers.0.blocks.0.attn.relative_position_bias_table"])
    # non-table weights are the checkpoint's
    torch.testing.assert_close(model.patch_embed.proj.weight, ref.patch_embed.proj.weight)
    with torch.no_grad():
        out = model(_x(img_size))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    # the same change at runtime gives the same model
    ref.set_input_size(img_size, window_size)
    with torch.no_grad():
        torch.testing.assert_close(ref(_x(img_size)), out)


def test_swin_checkpoint_with_derived_buffers_and_new_classes(tmp_path) -> None:
    ref = _swin()
    sd = dict(ref.state_dict())
    sd["layers.0.blocks.1.attn.relative_position_index"] = relative_position_index((7, 7))  # older checkpoints
    path = tmp_path / "swin.pth"
    torch.save(sd, path)
    model = visionzoo.create_model(SWIN, **SMALL_SWIN, pretrained=True, num_classes=3, in_chans=1,
                                   pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        assert model(_x(224, 1, chans=1)).shape == (1, 3)


def test_swin_any_input_size() -> None:
    model = _swin()
    with torch.no_grad():
        assert model(_x(200, 1)).shape == (1, 1000)  # pads to whole windows, masks computed on the fly
        final, maps = model.forward_intermediates(_x(200, 1))
    assert [m.shape[-1] for m in maps] == [50, 25, 13, 7]


# --- grad checkpointing ------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [lambda: visionzoo.create_model("test_convnext", num_classes=4),
                                     lambda: visionzoo.create_model(SWIN, **SMALL_SWIN, num_classes=4,
                                                                    drop_path_rate=0.0)],
                         ids=["convnext", "swin"])
def test_grad_checkpointing_equivalence(factory) -> None:
    torch.manual_seed(0)
    model = factory().train()
    x = _x(64 if isinstance(model, ConvNeXt) else 112)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(x)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    out_a, grads_a = run()
    model.set_grad_checkpointing(True)
    out_b, grads_b = run()
    torch.testing.assert_close(out_b, out_a)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6)


# --- ConvNeXt checkpoints and blocks -----------------------------------------------------------
def _to_facebook_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our keys to the original facebookresearch/ConvNeXt layout."""
    out = {}
    for k, v in sd.items():
        k = k.replace("stem.", "downsample_layers.0.")
        if k.startswith("stages.") and ".downsample." in k:
            _, i, _, rest = k.split(".", 3)
            k = f"downsample_layers.{i}.{rest}"
        k = k.replace(".blocks.", ".").replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
        k = k.replace("head.norm.", "norm.").replace("head.fc.", "head.")
        out[k] = v
    return out


def test_convnext_loads_original_layout(tmp_path) -> None:
    torch.manual_seed(0)
    ref = visionzoo.create_model("test_convnext").eval()
    path = tmp_path / "fb.pth"
    torch.save({"model": _to_facebook_layout(ref.state_dict())}, path)
    model = visionzoo.create_model("test_convnext").eval()
    load_checkpoint(model, path, filter_fn=ConvNeXt.checkpoint_filter_fn)
    with torch.no_grad():
        torch.testing.assert_close(model(_x(64)), ref(_x(64)))


def test_grn_identity_at_init_and_layouts() -> None:
    x = torch.randn(2, 8, 5, 5)
    grn_cf, grn_cl = GlobalResponseNorm(8, channels_last=False), GlobalResponseNorm(8, channels_last=True)
    torch.testing.assert_close(grn_cf(x), x)
    with torch.no_grad():
        for g in (grn_cf, grn_cl):
            g.weight.normal_(generator=torch.Generator().manual_seed(1))
            g.bias.normal_(generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(grn_cl(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), grn_cf(x))


# --- window helpers ----------------------------------------------------------------------------
def test_window_helpers() -> None:
    x = torch.randn(2, 12, 8, 3)
    w = window_partition(x, (4, 4))
    assert w.shape == (12, 4, 4, 3)
    torch.testing.assert_close(window_reverse(w, (4, 4), 12, 8), x)
    idx = relative_position_index((3, 3))
    assert idx.shape == (9, 9) and idx.min() == 0 and idx.max() == 24 and (idx.diagonal() == 12).all()
    mask = shifted_window_mask(8, 8, (4, 4), (2, 2))
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one image region only
    torch.testing.assert_close(mask, mask.transpose(1, 2))
    table = torch.randn(13 * 13, 2)
    assert resize_rel_pos_bias_table(table, (7, 7)) is table
    assert resize_rel_pos_bias_table(table, (8, 8)).shape == (15 * 15, 2)
