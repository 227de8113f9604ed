"""MambaOut's gated CNN block and channels-last feature maps (tiny models, CPU, fast)."""
import torch

import visionzoo
from visionzoo.models.mambaout import GatedConvBlock


def _block(dim=8):
    torch.manual_seed(0)
    blk = GatedConvBlock(dim, expansion_ratio=2.0, kernel_size=7).eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return blk


def test_closed_gate_is_identity():
    blk, dim = _block(), 8
    hidden = blk.split_sizes[0]
    with torch.no_grad():  # gate rows of fc1 -> 0: act(g) = GELU(0) = 0 closes the branch
        blk.fc1.weight[:hidden].zero_()
        blk.fc1.bias[:hidden].zero_()
        blk.fc2.bias.zero_()
    x = torch.randn(1, 9, 9, dim)
    torch.testing.assert_close(blk(x), x)


def test_token_mixing_is_local_7x7():
    blk = _block().double()
    x = torch.randn(1, 15, 15, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 7, 7] += torch.randn(8, dtype=torch.float64)  # not a constant shift (LayerNorm would remove it)
    with torch.no_grad():
        changed = (blk(x2) - blk(x)).abs().sum(-1)[0] > 1e-9
    rows, cols = torch.nonzero(changed, as_tuple=True)
    assert changed[7, 7] and changed[4, 7] and changed[7, 10]  # reaches radius 3 ...
    assert rows.min() >= 4 and rows.max() <= 10 and cols.min() >= 4 and cols.max() <= 10  # ... and no further


def test_intermediates_layouts_and_unpooled_head():
    model = visionzoo.create_model("test_mambaout").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        nhwc = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
        nchw = model.forward_intermediates(x, output_fmt="NCHW", intermediates_only=True)
        for a, b, info in zip(nhwc, nchw, model.feature_info):
            assert a.shape[-1] == info["num_chs"] and a.shape[1] == 64 // info["reduction"]
            torch.testing.assert_close(a.permute(0, 3, 1, 2), b)
        torch.testing.assert_close(model.forward_features(x), nhwc[-1])
        model.reset_classifier(0, "")
        assert model(x).shape == (1, 2, 2, model.head_hidden_size)
