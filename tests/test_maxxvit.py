"""MaxViT / CoAtNet behaviour beyond the fixture checks: partitions, attention against a naive
reference, relative position bias resampling on load (tiny configs, small inputs)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionzoo
from visionzoo.models.maxxvit import (AttentionCl, MaxxVit, PartitionAttention, TransformerCfg, grid_partition,
                                      grid_reverse, window_partition, window_reverse)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- partitions --------------------------------------------------------------------------------
def test_block_and_grid_partition_select_and_invert() -> None:
    b, h, w, c, p = 2, 12, 8, 3, (3, 2)
    x = torch.randn(b, h, w, c, generator=_gen())
    blocks = window_partition(x, p)
    grids = grid_partition(x, p)
    assert blocks.shape == grids.shape == (b * (h // p[0]) * (w // p[1]), p[0], p[1], c)
    torch.testing.assert_close(window_reverse(blocks, p, h, w), x, rtol=0, atol=0)
    torch.testing.assert_close(grid_reverse(grids, p, h, w), x, rtol=0, atol=0)
    # a block window holds contiguous pixels
    torch.testing.assert_close(blocks[0], x[0, :3, :2], rtol=0, atol=0)
    torch.testing.assert_close(blocks[1], x[0, :3, 2:4], rtol=0, atol=0)
    # a grid group holds p tokens per axis spaced (h/p0, w/p1) apart, one group per offset
    sy, sx = h // p[0], w // p[1]
    groups = grids[: sy * sx].reshape(sy, sx, p[0], p[1], c)
    for oy in range(sy):
        for ox in range(sx):
            torch.testing.assert_close(groups[oy, ox], x[0, oy::sy, ox::sx], rtol=0, atol=0)


# --- attention -----------------------------------------------------------------------------------
def _naive_attention(attn: AttentionCl, x: torch.Tensor) -> torch.Tensor:
    """Per-window, per-head softmax(q k^T / sqrt(d) + bias) v written out with loops."""
    b, wh, ww, c = x.shape
    n, heads, d = wh * ww, attn.num_heads, attn.dim_head
    tokens = x.reshape(b, n, c)
    qkv = tokens @ attn.qkv.weight.t() + attn.qkv.bias
    qkv = qkv.view(b, n, heads, 3, d) if attn.head_first else qkv.view(b, n, 3, heads, d).transpose(2, 3)
    bias = attn.rel_pos.get_bias()[0]
    out = torch.zeros(b, n, heads, d)
    for i in range(b):
        for hd in range(heads):
            q, k, v = qkv[i, :, hd, 0], qkv[i, :, hd, 1], qkv[i, :, hd, 2]
            logits = q @ k.t() / d ** 0.5 + bias[hd]
            out[i, :, hd] = logits.softmax(-1) @ v
    out = out.reshape(b, n, heads * d) @ attn.proj.weight.t() + attn.proj.bias
    return out.reshape(b, wh, ww, -1)


@pytest.mark.parametrize("rel_pos", ["bias", "bias_tf", "mlp"])
@pytest.mark.parametrize("head_first", [True, False])
@pytest.mark.parametrize("fused", [True, False])
def test_window_attention_matches_naive(rel_pos: str, head_first: bool, fused: bool) -> None:
    torch.manual_seed(0)
    attn = AttentionCl(16, dim_head=8, head_first=head_first, rel_pos=rel_pos, window_size=(3, 3),
                       rel_pos_dim=16).eval()
    with torch.no_grad():  # a non-trivial bias
        for p in attn.rel_pos.parameters():
            p.normal_(generator=_gen(1))
    attn.fused_attn = fused
    x = torch.randn(4, 3, 3, 16, generator=_gen())
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _naive_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_one_token_per_window_is_value_projection() -> None:
    """With 1x1 windows softmax is 1: block attention is proj(v) of each pixel, bias irrelevant."""
    torch.manual_seed(0)
    cfg = TransformerCfg(dim_head=8)
    block = PartitionAttention(16, "block", (1, 1), cfg).eval()
    x = torch.randn(2, 4, 4, 16, generator=_gen())
    with torch.no_grad():
        a = block.attn
        v = (x @ a.qkv.weight.t() + a.qkv.bias).view(2, 4, 4, a.num_heads, 3, a.dim_head)[..., 2, :]
        expected = v.reshape(2, 4, 4, 16) @ a.proj.weight.t() + a.proj.bias
        torch.testing.assert_close(block._partition_attn(x), expected, rtol=1e-5, atol=1e-5)


def test_grid_attention_mixes_strided_tokens_only() -> None:
    """Grid attention: changing one pixel changes exactly the pixels of its strided grid group."""
    torch.manual_seed(0)
    grid = PartitionAttention(16, "grid", (2, 2), TransformerCfg(dim_head=8)).eval()
    block = PartitionAttention(16, "block", (2, 2), TransformerCfg(dim_head=8)).eval()
    x = torch.randn(1, 8, 8, 16, generator=_gen())
    y = x.clone()
    y[0, 1, 2] += 1.0
    with torch.no_grad():
        dg = (grid._partition_attn(x) - grid._partition_attn(y)).abs().sum(-1)[0] > 1e-6
        db = (block._partition_attn(x) - block._partition_attn(y)).abs().sum(-1)[0] > 1e-6
    changed_grid = {(i, j) for i in range(8) for j in range(8) if dg[i, j]}
    assert changed_grid == {(i, j) for i in (1, 5) for j in (2, 6)}  # 8/2 = 4 apart
    changed_block = {(i, j) for i in range(8) for j in range(8) if db[i, j]}
    assert changed_block == {(i, j) for i in (0, 1) for j in (2, 3)}  # the 2x2 window


# --- relative position bias on load at another size ---------------------------------------------
def _tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.endswith("relative_position_bias_table")}


@pytest.mark.parametrize("name,key,new_shape", [
    ("test_maxvit", "stages.0.blocks.0.attn_block.attn.rel_pos.relative_position_bias_table", (169, 1)),
    ("test_coatnet", "stages.2.blocks.0.attn.rel_pos.relative_position_bias_table", (27 ** 2, 2)),
])
def test_rel_pos_bias_resampled_on_load(tmp_path, name: str, key: str, new_shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    ref = visionzoo.create_model(name).eval()  # 160 px: 5x5 windows, CoAtNet stage-2 map 10x10
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    model = visionzoo.create_model(name, img_size=224, pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(path))).eval()
    old, new = _tables(ref)[key], _tables(model)[key]
    assert new.shape == new_shape
    side_old, side_new = round(old.shape[0] ** 0.5), round(new_shape[0] ** 0.5)
    grid = old.t().reshape(1, -1, side_old, side_old)
    expected = F.interpolate(grid, size=(side_new, side_new), mode="bicubic", align_corners=False)
    torch.testing.assert_close(new, expected.reshape(-1, side_new ** 2).t())
    torch.testing.assert_close(model.stem.conv1.weight, ref.stem.conv1.weight)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224, generator=_gen()))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_tf_rel_pos_table_resampled_and_same_size_unchanged() -> None:
    cfg = visionzoo.models.maxxvit.VARIANTS["maxvit_tiny_tf_224"].args["cfg"]
    tiny = dict(embed_dim=(32, 32, 32, 32), depths=(1, 1, 1, 1), stem_width=16, head_hidden_size=32)
    from dataclasses import replace
    cfg = replace(cfg, **tiny)
    torch.manual_seed(0)
    ref = MaxxVit(cfg=cfg, img_size=64, num_classes=5).eval()   # 2x2 windows -> [heads, 3, 3] tables
    model = MaxxVit(cfg=cfg, img_size=128, num_classes=5).eval()  # 4x4 windows -> [heads, 7, 7]
    sd = MaxxVit.checkpoint_filter_fn(ref.state_dict(), model)
    model.load_state_dict(sd)
    key = "stages.0.blocks.0.attn_grid.attn.rel_pos.relative_position_bias_table"
    assert sd[key].shape == (1, 7, 7)
    expected = F.interpolate(ref.state_dict()[key][None], size=(7, 7), mode="bicubic", align_corners=False)[0]
    torch.testing.assert_close(sd[key], expected)
    same = MaxxVit.checkpoint_filter_fn(ref.state_dict(), ref)
    assert all(torch.equal(same[k], v) for k, v in ref.state_dict().items())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 128, generator=_gen())).shape == (1, 5)


def test_rmlp_model_runs_at_another_size_without_resampling() -> None:
    """The MLP bias has no table: a 224 checkpoint loads as is into a model built for 256."""
    from dataclasses import replace
    cfg = visionzoo.models.maxxvit.VARIANTS["maxvit_rmlp_pico_rw_256"].args["cfg"]
    cfg = replace(cfg, embed_dim=(32, 32, 32, 32), depths=(1, 1, 1, 1), stem_width=(8, 16))
    torch.manual_seed(0)
    ref = MaxxVit(cfg=cfg, img_size=224, num_classes=3).eval()
    model = MaxxVit(cfg=cfg, img_size=256, num_classes=3).eval()
    model.load_state_dict(MaxxVit.checkpoint_filter_fn(ref.state_dict(), model))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256, generator=_gen())).shape == (1, 3)
