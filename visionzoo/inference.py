"""Fast CPU inference: :func:`optimize` turns an eager model into a faster inference-only one.

What :func:`optimize` does, in order (each step can be turned off):

1. ``model.eval()``;
2. **BatchNorm folding** (:func:`fold_batchnorm`): every eval-mode BatchNorm whose input is
   the output of a plain convolution, and which is that output's *only* consumer, is folded
   into the convolution's weight and bias and replaced by ``nn.Identity``. Pairs are found by
   running one forward pass under a :class:`~torch.overrides.TorchFunctionMode` that records
   which op consumes each convolution output, so it works for any module layout
   (``ConvNormAct``'s ``conv``/``bn``, ResNet's ``conv1``/``bn1``, ``nn.Sequential``s, ...; a
   ``BatchNormAct2d`` leaves its activation behind) and never
   folds a convolution whose output is also used elsewhere (pre-activation shortcuts, ...);
3. **fused attention**: modules with a boolean ``fused_attn`` attribute are switched to
   ``F.scaled_dot_product_attention``;
4. **channels-last** memory format for weights and inputs (oneDNN's fast convolution layout);
5. **dtype** (``torch.bfloat16`` when asked for and the CPU has native bf16 support);
6. **torch.compile** (Inductor with weight freezing) when a working C++ toolchain is present;
7. the result is wrapped in :class:`OptimizedModel`, whose ``forward`` converts the input,
   runs under :func:`torch.inference_mode` and returns float32 outputs.

The returned model is for inference only: its state dict no longer matches the architecture
(folded BatchNorms are gone). float32 outputs match the eager model to round-off (the tests
hold them to the conformance tolerance); bfloat16 outputs get a looser check (see
:func:`bf16_close`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from functools import lru_cache
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["optimize", "fold_batchnorm", "OptimizedModel", "bf16_supported", "compile_available",
           "example_input", "resolve_input_size", "bf16_close"]

_BN_FORWARD = nn.modules.batchnorm._BatchNorm.forward


def bf16_supported() -> bool:
    """True when this CPU runs bfloat16 natively (AVX512-BF16 / AMX, or ARM BF16) via oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@lru_cache(maxsize=1)
def compile_available() -> tuple[bool, str]:
    """Whether ``torch.compile`` (Inductor, CPU) can run here, and why not when it cannot."""
    if os.environ.get("VISIONZOO_NO_COMPILE"):
        return False, "disabled by $VISIONZOO_NO_COMPILE"
    if not hasattr(torch, "compile"):
        return False, "torch.compile is not in this torch version"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return False, "torch.compile does not support this Python version"
    except Exception as e:  # noqa: BLE001 - any import problem means "not available"
        return False, f"torch._dynamo unavailable: {type(e).__name__}: {e}"
    cxx = os.environ.get("CXX")
    if not (cxx and shutil.which(cxx)) and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return False, "no C++ compiler found (Inductor's CPU backend needs one; set $CXX)"
    return True, ""


def resolve_input_size(model: nn.Module, img_size: int | Sequence[int] | None = None) -> tuple[int, int, int]:
    """(C, H, W) for ``model``: ``img_size`` if given, else a fixed patch-embed size, else the cfg's."""
    cfg = getattr(model, "pretrained_cfg", None)
    size = getattr(cfg, "input_size", None) if cfg is not None and not isinstance(cfg, dict) else \
        (cfg or {}).get("input_size")
    chans, hw = (size[0], tuple(size[1:])) if size else (3, (224, 224))
    in_chans = getattr(model, "in_chans", None)
    if isinstance(in_chans, int):
        chans = in_chans
    if img_size is not None:
        hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)[-2:]
    else:
        pe = getattr(model, "patch_embed", None)
        pe_size = getattr(pe, "img_size", None)
        if isinstance(pe_size, (tuple, list)) and len(pe_size) == 2 and all(isinstance(v, int) for v in pe_size):
            hw = tuple(pe_size)
        elif isinstance(pe_size, int):
            hw = (pe_size, pe_size)
    if len(hw) != 2:
        raise ValueError(f"img_size must be an int or (H, W), got {img_size!r}")
    return int(chans), int(hw[0]), int(hw[1])


def example_input(model: nn.Module, img_size: int | Sequence[int] | None = None, batch_size: int = 1,
                  seed: int = 0) -> torch.Tensor:
    """A deterministic standard-normal input batch shaped for ``model``."""
    c, h, w = resolve_input_size(model, img_size)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, c, h, w, generator=g)


# ---------------------------------------------------------------------------------------------
# BatchNorm folding


def _foldable_conv(m: nn.Module) -> bool:
    """A convolution whose output is linear in (weight, bias) with no weight reparametrisation."""
    if not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return False
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(m):
        return False
    plain = {nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward}
    try:
        from .layers.padding import Conv2dSame

        plain.add(Conv2dSame.forward)
    except ImportError:  # pragma: no cover
        pass
    # subclasses with their own forward (weight standardisation, ...) are not plain
    return type(m).forward in plain and isinstance(getattr(m, "weight", None), torch.Tensor)


def _bn_remainder(m: nn.Module) -> nn.Module | None:
    """What replaces a folded BatchNorm: ``Identity``, the activation of a ``BatchNormAct2d``,
    or ``None`` when ``m`` is not a foldable eval-mode BatchNorm."""
    if not (isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training
            and m.running_mean is not None and m.running_var is not None):
        return None
    if type(m).forward is _BN_FORWARD:
        return nn.Identity()
    from .layers.norm_act import BatchNormAct2d

    if type(m) is BatchNormAct2d:  # normalisation then ``self.act``
        return m.act
    return None


def _foldable_bn(m: nn.Module) -> bool:
    return _bn_remainder(m) is not None


class _UseCounter(TorchFunctionMode):
    """Counts, per tracked tensor, the torch ops that consume it and produce a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.tracked: dict[int, torch.Tensor] = {}
        self.uses: dict[int, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.tracked and any(isinstance(o, torch.Tensor) for o in tree_flatten(out)[0]):
            for a in tree_flatten((args, kwargs))[0]:
                if isinstance(a, torch.Tensor):
                    key = id(a)
                    if key in self.tracked and self.tracked[key] is a:
                        self.uses[key] = self.uses.get(key, 0) + 1
        return out


def _find_conv_bn_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, bn name) pairs where the BN is the sole consumer of the conv output, every call."""
    names = {m: n for n, m in model.named_modules(remove_duplicate=False)}
    counter = _UseCounter()
    conv_of: dict[int, nn.Module] = {}  # id(conv output) -> conv
    conv_calls: dict[nn.Module, list[int]] = {}  # conv -> ids of its outputs
    bn_sources: dict[nn.Module, list[nn.Module | None]] = {}
    bn_inputs: dict[nn.Module, list[int]] = {}
    handles = []

    def conv_hook(mod, _inp, out):
        if isinstance(out, torch.Tensor):
            counter.tracked[id(out)] = out
            conv_of[id(out)] = mod
            conv_calls.setdefault(mod, []).append(id(out))
        else:
            conv_calls.setdefault(mod, []).append(-1)

    def bn_pre_hook(mod, args):
        a = args[0] if args else None
        src = conv_of.get(id(a)) if isinstance(a, torch.Tensor) and counter.tracked.get(id(a)) is a else None
        bn_sources.setdefault(mod, []).append(src)
        bn_inputs.setdefault(mod, []).append(id(a))

    try:
        for m in model.modules():
            if _foldable_conv(m):
                handles.append(m.register_forward_hook(conv_hook))
            elif _foldable_bn(m):
                handles.append(m.register_forward_pre_hook(bn_pre_hook))
        with torch.no_grad(), counter:
            model(x)
    finally:
        for h in handles:
            h.remove()

    # which BN consumed each conv output
    consumer: dict[int, nn.Module] = {}
    for bn, ids in bn_inputs.items():
        for src, i in zip(bn_sources[bn], ids):
            if src is not None:
                consumer[i] = bn
    pairs = []
    for bn, sources in bn_sources.items():
        conv = sources[0]
        if conv is None or any(s is not conv for s in sources):
            continue
        outs = conv_calls.get(conv, [])
        # every call of the conv feeds this BN, and nothing else reads the conv output
        if outs and all(consumer.get(i) is bn and counter.uses.get(i, 0) == 1 for i in outs):
            if conv.weight.shape[0] == bn.num_features:
                pairs.append((names[conv], names[bn]))
    return pairs


@torch.no_grad()
def _fold_pair(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    w = conv.weight.double()
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    bias = conv.bias.double() * scale + shift if conv.bias is not None else shift
    w = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    conv.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None,
                   img_size: int | Sequence[int] | None = None) -> list[tuple[str, str]]:
    """Fold eval-mode BatchNorms into the convolutions that feed them, in place.

    Runs one forward pass on ``example`` (default: a batch-1 input of the model's size) to
    find the pairs; see the module docstring for the rules. Returns the folded
    ``(conv, bn)`` module names. The model must be in eval mode.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval() first)")
    if example is None:
        example = example_input(model, img_size)
    pairs = _find_conv_bn_pairs(model, example)
    for conv_name, bn_name in pairs:
        bn = model.get_submodule(bn_name)
        remainder = _bn_remainder(bn)
        _fold_pair(model.get_submodule(conv_name), bn)
        _set_submodule(model, bn_name, remainder)
    return pairs


# ---------------------------------------------------------------------------------------------
# the wrapper


class OptimizedModel(nn.Module):
    """Inference wrapper: converts inputs (memory format, dtype), runs under inference mode.

    ``model`` is the (folded, converted) network; attributes it has (``pretrained_cfg``,
    ``num_classes``, ...) are reachable on the wrapper. ``report`` says what was applied.
    """

    def __init__(self, model: nn.Module, runner: Any = None, *, channels_last: bool = False,
                 dtype: torch.dtype | None = None, inference_mode: bool = True,
                 report: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_runner", runner if runner is not None else model)  # not a submodule
        self.channels_last = channels_last
        self.dtype = dtype
        self.use_inference_mode = inference_mode
        self.report = dict(report or {})

    def _convert(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor):
            return x
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is not None and x.is_floating_point():
            x = x.to(self.dtype)
        return x

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        ctx = torch.inference_mode() if self.use_inference_mode else contextlib.nullcontext()
        with ctx:
            out = self._runner(self._convert(x), *args, **kwargs)
        if self.dtype is not None:
            out = tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "model" in modules:
                return getattr(modules["model"], name)
            raise


def _set_fused_attn(model: nn.Module, enable: bool) -> int:
    n = 0
    for m in model.modules():
        if isinstance(getattr(m, "fused_attn", None), bool):
            m.fused_attn = enable
            n += 1
    return n


def optimize(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    compile: bool | None = None,
    dtype: torch.dtype | str | None = None,
    fused_attn: bool = True,
    inference_mode: bool = True,
    img_size: int | Sequence[int] | None = None,
    example: torch.Tensor | None = None,
    compile_mode: str | None = None,
    verify: bool = False,
) -> OptimizedModel:
    """Return a faster inference-only version of ``model`` (modified in place, then wrapped).

    Args:
        fold_bn: fold BatchNorm into the preceding convolution (exact up to float round-off).
        channels_last: NHWC weights and inputs (fast oneDNN convolutions on CPU).
        compile: ``torch.compile`` with Inductor and weight freezing; ``None`` = when available
            (:func:`compile_available`). The first call of each input shape compiles (seconds
            to a minute); later calls are fast.
        dtype: ``None``/``torch.float32`` keep float32; ``torch.bfloat16`` (or ``'bfloat16'``)
            casts weights and inputs; ``'auto'`` picks bfloat16 when :func:`bf16_supported`.
            Outputs are returned as float32 either way.
        fused_attn: switch attention modules to ``F.scaled_dot_product_attention``.
        inference_mode: run ``forward`` under :func:`torch.inference_mode`.
        img_size, example: input used for the BatchNorm-folding trace and ``verify``
            (default: the model's cfg input size, batch 1).
        compile_mode: ``torch.compile`` mode (e.g. ``'max-autotune'``).
        verify: compare the optimized output on ``example`` with the eager one and raise if it
            is outside tolerance (float32: 1e-4 relative to the logit scale; bf16: :func:`bf16_close`).

    Returns:
        :class:`OptimizedModel`; ``.report`` lists what was applied (folded pairs, compile, dtype).
    """
    if isinstance(model, OptimizedModel):
        raise ValueError("model is already optimized")
    report: dict[str, Any] = {}
    model.eval()
    if example is None:
        example = example_input(model, img_size)
    ref = None
    if verify:
        with torch.inference_mode():
            ref = model(example)

    if isinstance(dtype, str):
        key = dtype.lower()
        if key == "auto":
            dtype = torch.bfloat16 if bf16_supported() else None
        elif key in ("bf16", "bfloat16"):
            dtype = torch.bfloat16
        elif key in ("fp32", "float32", "float"):
            dtype = None
        else:
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bfloat16' or 'float32'")
    if dtype == torch.float32:
        dtype = None
    if dtype is not None and dtype != torch.bfloat16:
        raise ValueError(f"optimize supports float32 and bfloat16, got {dtype}")
    if dtype == torch.bfloat16 and not bf16_supported():
        import warnings

        warnings.warn("this CPU has no native bfloat16 support; bfloat16 will be slow", stacklevel=2)

    t0 = time.perf_counter()
    if fold_bn:
        report["folded_bn"] = len(fold_batchnorm(model, example))
    if fused_attn:
        report["fused_attn_modules"] = _set_fused_attn(model, True)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dtype is not None:
        model = model.to(dtype)
    report["channels_last"] = channels_last
    report["dtype"] = str(dtype or torch.float32).replace("torch.", "")
    for p in model.parameters():
        p.requires_grad_(False)

    runner: Any = model
    if compile is None:
        compile = compile_available()[0]
    if compile:
        ok, why = compile_available()
        if not ok:
            raise RuntimeError(f"torch.compile is not available: {why}")
        runner = torch.compile(model, mode=compile_mode, dynamic=False, options=None if compile_mode else
                               {"freezing": True})
    report["compiled"] = bool(compile)
    report["prepare_s"] = round(time.perf_counter() - t0, 3)

    out_model = OptimizedModel(model, runner, channels_last=channels_last, dtype=dtype,
                               inference_mode=inference_mode, report=report)
    if verify:
        got = out_model(example)
        if dtype is None:
            diff = _max_abs_diff(got, ref)
            tol = 1e-4 * max(1.0, _absmax(ref))
            if diff > tol:
                raise RuntimeError(f"optimized model differs from eager: max abs diff {diff:.3g} > {tol:.3g}")
        else:
            ok, msg = bf16_close(got, ref)
            if not ok:
                raise RuntimeError(f"bfloat16 model differs from eager: {msg}")
        out_model.report["verified_max_abs_diff"] = _max_abs_diff(got, ref)
    return out_model


def _tensors(x: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]


def _absmax(x: Any) -> float:
    return max((t.detach().double().abs().max().item() for t in _tensors(x) if t.numel()), default=0.0)


def _max_abs_diff(a: Any, b: Any) -> float:
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb):
        raise ValueError(f"outputs differ in structure: {len(ta)} vs {len(tb)} tensors")
    return max((float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(ta, tb) if x.numel()),
               default=0.0)


def bf16_close(got: torch.Tensor, ref: torch.Tensor, rel: float = 0.05, min_cos: float = 0.995) -> tuple[bool, str]:
    """bfloat16 check: max abs diff within ``rel`` x the reference's scale and cosine similarity
    of each sample's output ≥ ``min_cos`` (bf16 keeps ~3 significant digits)."""
    got, ref = got.detach().double().flatten(1), ref.detach().double().flatten(1)
    diff = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1).min().item()
    ok = diff <= rel * max(scale, 1e-6) and cos >= min_cos
    return ok, f"max abs diff {diff:.3g} (scale {scale:.3g}, allowed {rel * scale:.3g}), min cosine {cos:.5f}"
