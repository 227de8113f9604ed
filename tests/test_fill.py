"""The deterministic fill against SPEC.md's test vectors and a literal, per-element reading of it."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

import fill
from fill import fill_model, fill_value, make_input, uniform

MASK = (1 << 64) - 1


def _spec_uniform(key: str, n: int) -> list[float]:
    """SPEC.md step 1, element by element with Python integers (no numpy, no chunking)."""
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    out = []
    for i in range(1, n + 1):
        z = (seed + i * 0x9E3779B97F4A7C15) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z = z ^ (z >> 31)
        out.append((z >> 11) * 2.0 ** -53)
    return out


def _spec_fill(key: str, shape: tuple[int, ...]) -> np.ndarray:
    n = math.prod(shape)
    leaf = key.rsplit(".", 1)[-1]
    u = np.array(_spec_uniform(key, n), dtype=np.float64)
    sym = (2.0 * u - 1.0) * math.sqrt(3.0)
    if leaf == "running_var":
        v = 0.5 + u
    elif leaf == "running_mean":
        v = 0.1 * sym
    elif len(shape) >= 2:
        v = sym / math.sqrt(n / shape[0])
    elif leaf in ("weight", "gamma"):
        v = 1.0 + 0.1 * sym
    else:
        v = 0.1 * sym
    return v.reshape(shape).astype(np.float32)


def test_spec_test_vectors():
    np.testing.assert_allclose(uniform("conv1.weight", 3), [0.63977572, 0.10832677, 0.09417237], rtol=0, atol=5e-9)
    np.testing.assert_allclose(fill_value("conv1.weight", (2, 3, 1, 1)).reshape(-1),
                               [0.27955145, -0.7833465, -0.8116553, 0.540252, 0.63844275, -0.674755], atol=5e-7)
    np.testing.assert_allclose(fill_value("bn1.running_var", (3,)), [0.8962525, 0.64283544, 0.608773], atol=5e-7)
    np.testing.assert_allclose(fill_value("bn1.weight", (3,)), [1.16061, 1.0307363, 0.86925215], atol=5e-7)
    np.testing.assert_allclose(fill_value("fc.bias", (3,)), [0.00639042, 0.11841544, -0.09245521], atol=5e-7)


@pytest.mark.parametrize("key,shape", [
    ("stem.conv.weight", (7, 3, 3, 3)), ("blocks.0.norm1.weight", (5,)), ("head.bias", (4,)),
    ("bn.running_mean", (6,)), ("bn.running_var", (6,)), ("cls_token", (1, 1, 8)), ("layer_scale.gamma", (3,)),
    ("pos_embed", ()),
])
def test_chunked_fill_is_bit_identical_to_the_spec(monkeypatch, key, shape):
    monkeypatch.setattr(fill, "_CHUNK", 16)  # many chunks, a ragged last one
    assert np.array_equal(fill_value(key, shape), _spec_fill(key, shape))


def test_fill_model_writes_every_float_entry_and_skips_integers():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    m[1].num_batches_tracked.fill_(7)
    fill_model(m)
    sd = m.state_dict()
    for key, t in sd.items():
        if t.is_floating_point():
            assert torch.equal(t, torch.from_numpy(_spec_fill(key, tuple(t.shape)))), key
    assert sd["1.num_batches_tracked"].item() == 7
    fill_model(m, key_map=lambda k: "model." + k)
    assert torch.equal(sd["0.weight"], torch.from_numpy(_spec_fill("model.0.weight", (4, 3, 3, 3))))


def test_input_is_symmetric_stream():
    x = make_input((3, 2, 2))
    ref = (2.0 * np.array(_spec_uniform("__input__", 12)) - 1.0) * math.sqrt(3.0)
    assert x.shape == (1, 3, 2, 2)
    assert torch.equal(x.reshape(-1), torch.from_numpy(ref.astype(np.float32)))
