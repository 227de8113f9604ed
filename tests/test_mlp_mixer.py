"""MLP-Mixer / ResMLP / gMLP blocks (tiny models)."""
from __future__ import annotations

import torch

from visionzoo.models.mlp_mixer import Affine, MlpMixer, SpatialGatingUnit


def _tiny(**kw) -> MlpMixer:
    args = dict(img_size=32, patch_size=8, embed_dim=16, num_blocks=3, num_classes=4)
    args.update(kw)
    torch.manual_seed(0)
    return MlpMixer(**args).eval()


def test_token_mixing_is_shared_across_channels_and_mixes_tokens():
    m = _tiny()
    blk = m.blocks[0]
    x = torch.randn(1, 16, 16)
    with torch.no_grad():
        for p in blk.mlp_tokens.parameters():
            p.normal_()
        base = blk(x)
        y = x.clone()
        y[:, 3] += torch.randn(16)  # perturb one token: other tokens change only through token mixing
        assert not torch.allclose(blk(y)[:, 5], base[:, 5])
        blk.mlp_tokens = type(blk.mlp_channels)(16, 8)  # a token MLP with zero output: tokens independent
        torch.nn.init.zeros_(blk.mlp_tokens.fc2.weight)
        torch.nn.init.zeros_(blk.mlp_tokens.fc2.bias)
        torch.testing.assert_close(blk(y)[:, 5], blk(x)[:, 5])


def test_gmlp_gate_starts_as_identity_gating():
    sgu = SpatialGatingUnit(8, seq_len=5)
    x = torch.randn(2, 5, 8)
    u, v = x.chunk(2, dim=-1)
    torch.testing.assert_close(sgu(x), u, rtol=1e-4, atol=1e-4)  # proj ~ 0 weight, unit bias
    m = _tiny(block="spatial_gating", mlp_ratio=6.0)
    assert m.blocks[0].mlp_channels.fc2.in_features == 48 and m.blocks[0].mlp_channels.gate.proj.in_features == 16


def test_resmlp_affine_and_layer_scale():
    aff = Affine(4)
    with torch.no_grad():
        aff.alpha.fill_(2.0)
        aff.beta.fill_(0.5)
    torch.testing.assert_close(aff(torch.ones(1, 3, 4)), torch.full((1, 3, 4), 2.5))
    m = _tiny(block="res", mlp_ratio=4.0, norm_layer="affine", init_values=1e-3)
    assert torch.all(m.blocks[0].ls1 == 1e-3) and m.blocks[0].linear_tokens.in_features == 16


def test_intermediates_and_features():
    m = _tiny(mlp_layer="glu", act_layer="silu", mlp_ratio=(1.0, 4.0))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, maps = m.forward_intermediates(x)
        torch.testing.assert_close(final, m.forward_features(x))
        assert [t.shape for t in maps] == [torch.Size([2, 16, 4, 4])] * 3
        nlc = m.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)
        torch.testing.assert_close(nlc[0].transpose(1, 2).reshape(2, 16, 4, 4), maps[-1])
        assert m(x).shape == (2, 4)
    m.prune_intermediate_layers([0])
    assert len(m.blocks) == 1 and m.num_classes == 0
