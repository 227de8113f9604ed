"""Family capabilities of the mobile CNNs (GhostNet, RepGhost, ...): re-parameterisation."""
from __future__ import annotations

import pytest
import torch



def _randomize_bn(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def _tiny_ghostnetv3() -> torch.nn.Module:
    from visionzoo.models.ghostnet import GhostNet
    cfg = (((3, 16, 16, 0, 1),), ((3, 48, 24, 0, 2),), ((3, 72, 24, 0, 1),), ((5, 72, 40, 0.25, 2),))
    return GhostNet(version=3, width=0.5, cfg=cfg, head_chs=32, num_classes=10)


def _tiny_repghost() -> torch.nn.Module:
    from visionzoo.models.ghostnet import GhostNet
    from visionzoo.models.repghost import RepGhostModule
    cfg = (((3, 8, 16, 0, 1),), ((3, 24, 24, 0, 2),), ((3, 36, 24, 0, 1),), ((5, 36, 40, 0.25, 2),))
    return GhostNet(cfg=cfg, ghost_module=RepGhostModule, final_mult=2.0, head_chs=32, num_classes=10)


@pytest.mark.parametrize("build", [_tiny_ghostnetv3, _tiny_repghost], ids=["ghostnetv3", "repghost"])
def test_reparameterize_equal_outputs(build) -> None:
    torch.manual_seed(0)
    model = build().eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        n_before = sum(p.numel() for p in model.parameters())
        model.reparameterize()
        out = model(x)
    assert sum(p.numel() for p in model.parameters()) < n_before  # the branches are gone
    assert not any(k.endswith(("_rpr_conv.0.conv.weight", "fusion_bn.0.weight")) for k in model.state_dict())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
