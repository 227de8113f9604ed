"""The conformance fixtures' deterministic weight fill (shared/conformance/SPEC.md), in numpy.

Values depend only on a state_dict key and shape, so our models and the reference see identical
weights without sharing any random generator. The fill dominates the conformance suite's run
time, so the splitmix64 stream and the per-leaf transform run in cache-sized chunks written
straight into the destination (float32) array; each chunk does exactly the spec's float64
operations in the spec's order, so the values are bit-identical to a whole-array evaluation.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 15  # two uint64 and one float64 work arrays of this size stay in L2
_SQRT3 = math.sqrt(3.0)


def _seed(key: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little"))


def _uniform_chunks(key: str, n: int):
    """Yield (start, u) with u the float64 uniforms of positions start+1 .. start+len(u).

    The yielded array is a reused work buffer: consume it before the next step.
    """
    seed = _seed(key)
    z = np.empty(min(_CHUNK, max(n, 1)), dtype=np.uint64)
    t = np.empty_like(z)
    u = np.empty(z.shape, dtype=np.float64)
    with np.errstate(over="ignore"):
        for start in range(0, n, _CHUNK):
            m = min(_CHUNK, n - start)
            zz, tt, uu = z[:m], t[:m], u[:m]
            zz[:] = np.arange(start + 1, start + m + 1, dtype=np.uint64)
            np.multiply(zz, _GOLDEN, out=zz)
            np.add(zz, seed, out=zz)
            for shift, mult in ((30, _M1), (27, _M2), (31, None)):
                np.right_shift(zz, np.uint64(shift), out=tt)
                np.bitwise_xor(zz, tt, out=zz)
                if mult is not None:
                    np.multiply(zz, mult, out=zz)
            np.right_shift(zz, np.uint64(11), out=zz)
            uu[:] = zz
            uu *= 2.0 ** -53
            yield start, uu


def uniform(key: str, n: int) -> np.ndarray:
    """splitmix64 stream seeded by sha256(key): n float64 values in [0, 1)."""
    out = np.empty(n, dtype=np.float64)
    for start, u in _uniform_chunks(key, n):
        out[start:start + len(u)] = u
    return out


def symmetric(key: str, n: int) -> np.ndarray:
    return (2.0 * uniform(key, n) - 1.0) * np.sqrt(3.0)


def _transform(leaf: str, shape: tuple[int, ...], n: int):
    """The spec's per-leaf float64 map from uniforms to values, applied in place on a chunk."""
    def sym(u: np.ndarray) -> np.ndarray:  # (2u - 1) * sqrt(3)
        u *= 2.0
        u -= 1.0
        u *= _SQRT3
        return u

    if leaf == "running_var":
        def f(u):
            u += 0.5  # 0.5 + u
            return u
    elif leaf == "running_mean":
        def f(u):
            return np.multiply(sym(u), 0.1, out=u)
    elif len(shape) >= 2:
        scale = np.sqrt(n / shape[0])

        def f(u):
            return np.divide(sym(u), scale, out=u)
    elif leaf in ("weight", "gamma"):
        def f(u):
            np.multiply(sym(u), 0.1, out=u)
            return np.add(u, 1.0, out=u)  # 1 + 0.1 * symmetric
    else:
        def f(u):
            return np.multiply(sym(u), 0.1, out=u)
    return f


def fill_into(key: str, out: np.ndarray) -> np.ndarray:
    """Write the fill of ``key`` for ``out.shape`` into the contiguous float32 array ``out``."""
    flat = out.reshape(-1)
    n = flat.size
    f = _transform(key.rsplit(".", 1)[-1], tuple(out.shape), n)
    for start, u in _uniform_chunks(key, n):
        flat[start:start + len(u)] = f(u)  # float64 -> float32 on assignment
    return out


def fill_value(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The fill of one state_dict entry, float32, shaped ``shape``."""
    return fill_into(key, np.empty(shape, dtype=np.float32))


@torch.no_grad()
def fill_model(model: torch.nn.Module, key_map=None) -> None:
    """Overwrite every floating-point state_dict entry with the fill (integer buffers untouched).

    ``key_map`` renames our keys to the reference's before computing values (for wrappers).
    Keys are written in sorted (reference-key) order: a tensor that several keys share (CoaT's
    position encoders) ends with the fill of its lexicographically last key, as in the reference.
    """
    entries = [((key_map(key) if key_map else key), t) for key, t in model.state_dict(keep_vars=True).items()]
    for ref_key, t in sorted(entries, key=lambda e: e[0]):
        if not t.is_floating_point():
            continue
        data = t.data
        if data.dtype == torch.float32 and data.device.type == "cpu" and data.is_contiguous():
            fill_into(ref_key, data.numpy())
        else:
            data.copy_(torch.from_numpy(fill_value(ref_key, tuple(data.shape))))


def make_input(input_size, batch: int = 1) -> torch.Tensor:
    c, h, w = input_size
    return torch.from_numpy(symmetric("__input__", batch * c * h * w).astype(np.float32)).reshape(batch, c, h, w)
