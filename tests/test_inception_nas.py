"""Family-specific behaviour of the Inception / aligned-Xception / NASNet / PNASNet families.

Small inputs and random init: shapes and the agreement of the different feature paths, not
numerics (tests/test_conformance.py covers those against the reference).
"""
from __future__ import annotations

import pytest
import torch

import visionzoo
from visionzoo.features import FeatureHookNet, FeatureListNet


@pytest.mark.parametrize("output_stride", [8, 16])
def test_xception_aligned_output_stride(output_stride: int) -> None:
    """Atrous aligned Xception (DeepLabv3+ encoder): the strided convs past ``output_stride``
    become dilated, the levels keep their maps, the published keys and shapes do not change."""
    ref = visionzoo.create_model("xception41p")
    model = visionzoo.create_model("xception41p", output_stride=output_stride).eval()
    assert [(k, v.shape) for k, v in model.state_dict().items()] == \
        [(k, v.shape) for k, v in ref.state_dict().items()]
    assert max(f["reduction"] for f in model.feature_info) == output_stride
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        assert model(x).shape == (1, 1000)
    for m, f in zip(maps, model.feature_info):
        assert m.shape[1] == f["num_chs"] and m.shape[-1] == 64 // f["reduction"]


def test_xception_aligned_hooks_equal_intermediates() -> None:
    """The reference's hook wrapper reads ``blocks.N.stack.act3`` inside the blocks; our
    ``forward_intermediates`` hands out the same maps."""
    torch.manual_seed(0)
    model = visionzoo.create_model("xception41").eval()
    fmodel = visionzoo.create_model("xception41", features_only=True).eval()
    fmodel.load_state_dict({k: v for k, v in zip(fmodel.state_dict(), model.state_dict().values())})
    assert isinstance(fmodel, FeatureHookNet)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        hooked = fmodel(x)
        direct = model.forward_intermediates(x, intermediates_only=True)
    for a, b in zip(hooked, direct):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["nasnetalarge", "pnasnet5large"])
def test_nas_cell_nets_features(name: str) -> None:
    """NASNet / PNASNet: the default wrapper nests the model as ``body`` (the reference's hook
    wrapper), the levels ``<cell>.conv_1x1.act`` are the ReLU of that cell's input, and the hooked
    maps equal ``forward_intermediates``; ``feature_cls='list'`` gives the flat layout."""
    torch.manual_seed(0)
    fmodel = visionzoo.create_model(name, features_only=True).eval()
    assert isinstance(fmodel, FeatureHookNet) and next(iter(fmodel.state_dict())).startswith("body.")
    x = torch.randn(1, 3, 96, 96)  # TF "SAME" strided ops: odd and even sizes along the way
    with torch.no_grad():
        hooked = fmodel(x)
        direct = fmodel.body.forward_intermediates(x, intermediates_only=True)
    assert [m.shape[1] for m in hooked] == fmodel.feature_info.channels()
    for a, b in zip(hooked, direct):
        torch.testing.assert_close(a, b)
    assert all((m >= 0).all() for m in hooked[1:])  # post-ReLU levels
    flat = visionzoo.create_model(name, features_only=True, feature_cls="list", out_indices=(0, 1))
    assert isinstance(flat, FeatureListNet) and not next(iter(flat.state_dict())).startswith("body.")


def test_inception_resnet_v2_drop_path() -> None:
    """Residual Inception blocks take stochastic depth on the scaled residual branch only."""
    model = visionzoo.create_model("inception_resnet_v2", drop_path_rate=0.2)
    assert model.repeat[0].drop_path.__class__.__name__ == "Identity"  # rate 0 at the first block
    assert model.block8.drop_path.drop_prob == pytest.approx(0.2)
    x = torch.randn(1, 3, 107, 107)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("name,size,maps", [
    ("inception_v3", 299, [147, 71, 35, 17, 8]),
    ("inception_v4", 299, [147, 73, 35, 17, 8]),
    ("inception_resnet_v2", 299, [147, 71, 35, 17, 8]),
])
def test_inception_valid_padding_map_sizes(name: str, size: int, maps: list) -> None:
    """The Inception stems are valid-padded (as trained): map sizes trail ``size / reduction`` by
    a few pixels, exactly as in the reference (checked on the meta device)."""
    with torch.device("meta"):
        model = visionzoo.create_model(name)
        out = model.forward_intermediates(torch.empty(1, 3, size, size), intermediates_only=True)
    assert [m.shape[-1] for m in out] == maps
