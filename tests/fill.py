"""The conformance fixtures' deterministic weight fill (shared/conformance/SPEC.md), in numpy.

Values depend only on a state_dict key and shape, so our models and the reference see identical
weights without sharing any random generator.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 20


def uniform(key: str, n: int) -> np.ndarray:
    """splitmix64 stream seeded by sha256(key): n float64 values in [0, 1). In-place numpy ops
    on 1M-element chunks keep it fast and bounded in memory."""
    seed = np.uint64(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little"))
    out = np.empty(n, dtype=np.float64)
    z = np.empty(min(_CHUNK, n), dtype=np.uint64)
    t = np.empty_like(z)
    with np.errstate(over="ignore"):
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            zz, tt = z[:m], t[:m]
            zz[:] = np.arange(start + 1, start + m + 1, dtype=np.uint64)
            np.multiply(zz, _GOLDEN, out=zz)
            np.add(zz, seed, out=zz)
            for shift, mult in ((30, _M1), (27, _M2), (31, None)):
                np.right_shift(zz, np.uint64(shift), out=tt)
                np.bitwise_xor(zz, tt, out=zz)
                if mult is not None:
                    np.multiply(zz, mult, out=zz)
            np.right_shift(zz, np.uint64(11), out=zz)
            o = out[start:start + m]
            o[:] = zz
            o *= 2.0 ** -53
    return out


def symmetric(key: str, n: int) -> np.ndarray:
    return (2.0 * uniform(key, n) - 1.0) * np.sqrt(3.0)


def fill_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 0.5 + uniform(key, n)
    elif leaf == "running_mean":
        v = 0.1 * symmetric(key, n)
    elif len(shape) >= 2:
        v = symmetric(key, n) / np.sqrt(n / shape[0])
    elif leaf in ("weight", "gamma"):
        v = 1.0 + 0.1 * symmetric(key, n)
    else:
        v = 0.1 * symmetric(key, n)
    return v.reshape(shape).astype(np.float32)


@torch.no_grad()
def fill_model(model: torch.nn.Module, key_map=None) -> None:
    """Overwrite every floating-point state_dict entry with the fill (integer buffers untouched).

    ``key_map`` renames our keys to the reference's before computing values (for wrappers).
    """
    for key, t in model.state_dict(keep_vars=True).items():
        if not t.is_floating_point():
            continue
        ref_key = key_map(key) if key_map else key
        t.data.copy_(torch.from_numpy(fill_value(ref_key, tuple(t.shape))))


def make_input(input_size, batch: int = 1) -> torch.Tensor:
    c, h, w = input_size
    return torch.from_numpy(symmetric("__input__", batch * c * h * w).astype(np.float32)).reshape(batch, c, h, w)
