"""Fast CPU inference: :func:`optimize` turns an eager model into a faster inference-only one.

What :func:`optimize` does, in order (each step can be turned off):

1. ``model.eval()``;
2. **re-parameterisation** (:func:`reparameterize_modules`): modules with a ``reparameterize()``
   method (RepVGG / MobileOne blocks, ...) fuse their training-time branches into one conv; then
   **BatchNorm folding** (:func:`fold_batchnorm`): every eval-mode BatchNorm whose input is
   the output of a plain convolution, and which is that output's *only* consumer, is folded
   into the convolution's weight and bias and replaced by ``nn.Identity``. Pairs are found by
   running one forward pass under a :class:`~torch.overrides.TorchFunctionMode` that records
   which op consumes each convolution output, so it works for any module layout
   (``ConvNormAct``'s ``conv``/``bn``, ResNet's ``conv1``/``bn1``, ``nn.Sequential``s, ...; a
   ``BatchNormAct2d`` leaves its activation behind; BatchNorm subclasses qualify when their
   output in the trace equals eval-mode batch norm [+ their ``act``]) and never
   folds a convolution whose output is also used elsewhere (pre-activation shortcuts, ...);
3. **fused attention**: modules with a boolean ``fused_attn`` attribute are switched to
   ``F.scaled_dot_product_attention``;
4. **channels-last** memory format for weights and inputs (oneDNN's fast convolution layout);
   float32 ``nn.Linear`` layers run MKL's packed-weight GEMM (:class:`PackedLinear`);
5. **bfloat16** weights and activations when the CPU runs bf16 natively (AVX512-BF16 / AMX), the
   default (``dtype=None``); ``dtype=torch.float32`` keeps float32 and exact outputs;
6. **torch.compile** (Inductor with weight freezing) with ``compile=True``, when a C++ toolchain
   is present (otherwise a warning and eager execution). Off by default: on the CPUs measured in
   ``benchmarks/results/inference_speed.md`` it compiled for 30-150 s per input shape and gained
   at most ~15% over the other steps (sometimes lost);
7. the result is wrapped in :class:`OptimizedModel`, whose ``forward`` converts the input,
   runs under :func:`torch.inference_mode` and returns float32 outputs.

The returned model is for inference only: its state dict no longer matches the architecture
(folded BatchNorms are gone). With ``dtype=torch.float32`` outputs match the eager model to
round-off (the tests hold them to the conformance tolerance); bfloat16 outputs get a looser check
(see :func:`bf16_close`).
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import time
import warnings
from functools import lru_cache
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

from .compare import bf16_close, max_abs_diff, outputs_close

__all__ = ["optimize", "fold_batchnorm", "reparameterize_modules", "pack_linears", "PackedLinear", "OptimizedModel",
           "bf16_supported", "compile_available",
           "example_input", "resolve_input_size", "bf16_close"]

_BN_FORWARD = nn.modules.batchnorm._BatchNorm.forward


@lru_cache(maxsize=1)
def bf16_supported() -> bool:
    """True when this CPU has bfloat16 arithmetic in hardware (x86: AVX512-BF16 or AMX; ARM: BF16).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is also true on plain
    AVX-512, where bfloat16 is emulated: there ``optimize``'s bfloat16 ran 3x *slower* than float32
    (resnet50, vit_small; ``benchmarks/results/inference_speed.md``), so x86 asks for the ISA.
    """
    if platform.machine().lower() in ("x86_64", "amd64", "x86", "i386", "i686"):
        checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        checks = [c for c in checks if c is not None]
        if checks:
            return any(bool(c()) for c in checks)
        return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16"})
    try:  # ARM and others: oneDNN reports bf16 only where the core has the instructions
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpuinfo_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


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
    """A deterministic standard-normal input batch shaped for ``model``, on the model's device."""
    c, h, w = resolve_input_size(model, img_size)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, c, h, w, generator=g)
    p = next(model.parameters(), None)
    return x.to(p.device) if p is not None and p.device.type != "meta" else x


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
        from ..layers.padding import Conv2dSame

        plain.add(Conv2dSame.forward)
    except ImportError:  # pragma: no cover
        pass
    # subclasses with their own forward (weight standardisation, ...) are not plain
    return type(m).forward in plain and isinstance(getattr(m, "weight", None), torch.Tensor)


def _bn_candidate(m: nn.Module) -> bool:
    """An eval-mode BatchNorm (or subclass) with running statistics."""
    return (isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training
            and m.running_mean is not None and m.running_var is not None)


def _bn_known_remainder(m: nn.Module) -> nn.Module | None:
    """What replaces a folded BatchNorm of a known exact type (``Identity``, or a
    ``BatchNormAct2d``'s activation); ``None`` for subclasses, which are checked numerically."""
    if type(m).forward is _BN_FORWARD:
        return nn.Identity()
    from ..layers.norm_act import BatchNormAct2d

    if type(m) is BatchNormAct2d:  # normalisation then ``self.act``
        return m.act
    return None


def _bn_reference(m: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> tuple[torch.Tensor, nn.Module]:
    """Eval-mode BatchNorm of ``x``, then ``m.act`` when ``m`` has one; and that remainder module."""
    y = F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    act = getattr(m, "act", None)
    if isinstance(act, nn.Module):
        return act(y), act
    return y, nn.Identity()


class _UseCounter(TorchFunctionMode):
    """Counts, per tracked tensor, the torch ops that consume it and produce a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.tracked: dict[int, torch.Tensor] = {}
        self.uses: dict[int, int] = {}
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.tracked and not self.paused and any(isinstance(o, torch.Tensor) for o in tree_flatten(out)[0]):
            for a in tree_flatten((args, kwargs))[0]:
                if isinstance(a, torch.Tensor):
                    key = id(a)
                    if key in self.tracked and self.tracked[key] is a:
                        self.uses[key] = self.uses.get(key, 0) + 1
        return out


def _find_conv_bn_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str, nn.Module]]:
    """(conv name, bn name, remainder) where the BN is the sole consumer of the conv output, every call.

    BatchNorm subclasses of unknown type qualify when, on every call of the trace, their output
    equals an eval-mode ``F.batch_norm`` (followed by their ``act``, if they have one).
    """
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

    remainder: dict[nn.Module, nn.Module | None] = {}

    def bn_pre_hook(mod, args):
        a = args[0] if args else None
        src = conv_of.get(id(a)) if isinstance(a, torch.Tensor) and counter.tracked.get(id(a)) is a else None
        bn_sources.setdefault(mod, []).append(src)
        bn_inputs.setdefault(mod, []).append(id(a))
        if mod not in remainder or remainder[mod] is not None:
            known = _bn_known_remainder(mod)
            if known is not None:
                remainder[mod] = known
            elif isinstance(a, torch.Tensor):  # a subclass: compare with the reference after it runs
                counter.paused = True
                try:
                    ref, rest = _bn_reference(mod, a.clone())
                finally:
                    counter.paused = False
                pending[mod] = (ref, rest)
            else:
                remainder[mod] = None

    pending: dict[nn.Module, tuple[torch.Tensor, nn.Module]] = {}

    def bn_hook(mod, _args, out):
        if mod not in pending:
            return
        ref, rest = pending.pop(mod)
        same = isinstance(out, torch.Tensor) and out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
        prev = remainder.get(mod, rest)
        remainder[mod] = rest if same and prev is not None else None

    try:
        for m in model.modules():
            if _foldable_conv(m):
                handles.append(m.register_forward_hook(conv_hook))
            elif _bn_candidate(m):
                handles.append(m.register_forward_pre_hook(bn_pre_hook))
                handles.append(m.register_forward_hook(bn_hook))
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
            if conv.weight.shape[0] == bn.num_features and remainder.get(bn) is not None:
                pairs.append((names[conv], names[bn], remainder[bn]))
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
    aliases: dict[nn.Module, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        aliases.setdefault(m, []).append(n)
    for conv_name, bn_name, remainder in pairs:
        bn = model.get_submodule(bn_name)
        _fold_pair(model.get_submodule(conv_name), bn)
        for name in aliases[bn]:  # a BN registered under several names is replaced everywhere
            _set_submodule(model, name, remainder)
    return [(c, b) for c, b, _ in pairs]


# ---------------------------------------------------------------------------------------------
# the wrapper


class _FixedShapeRunner:
    """An exported graph fixed to one ``C, H, W`` (the batch axis is free).

    With a ``fallback`` (the folded torch model; ``backend='auto'``) other image sizes run on it,
    and for each new input shape (up to ``max_shapes``) the first call times both on that input
    and keeps the faster: which backend wins depends on the CPU and the batch (ONNX Runtime's
    fusions win on mobile nets; on some CPUs the torch GEMMs win on transformers at batch 8).
    The choice per shape is in ``report['backend_by_shape']``. Without a fallback other sizes
    are an error that names the exported size.
    """

    max_shapes = 8

    def __init__(self, runner: Any, fallback: nn.Module | None, shape: tuple[int, ...],
                 channels_last: bool = False) -> None:
        self.runner, self.fallback, self.shape = runner, fallback, shape
        self.report: dict[str, Any] = {}  # the OptimizedModel's report, linked once it exists
        self.channels_last = channels_last
        self._picked: dict[tuple[int, ...], str] = {}

    def _torch(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        assert self.fallback is not None
        if self.channels_last and isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.fallback(x, *args, **kwargs)

    def _race(self, x: torch.Tensor, rounds: int = 2) -> str:
        """Time both backends on ``x`` and keep the faster: one untimed call each, then ``rounds``
        alternating timed calls, best of each (alternating, so a burst of load elsewhere on the CPU
        slows both rather than deciding the race)."""
        fns = {"onnxruntime": self.runner, "torch": self._torch}
        best = dict.fromkeys(fns, float("inf"))
        for i in range(rounds + 1):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                if i:
                    best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
        pick = min(best, key=best.get)
        self.report.setdefault("backend_by_shape", {})["x".join(map(str, x.shape))] = \
            f"{pick} ({best['onnxruntime']:.1f} ms onnxruntime, {best['torch']:.1f} ms torch)"
        return pick

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        fits = isinstance(x, torch.Tensor) and not args and not kwargs and tuple(x.shape[1:]) == self.shape
        if self.fallback is None:
            if fits:
                return self.runner(x)
            got = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"this ONNX Runtime graph was exported for inputs [N, {', '.join(map(str, self.shape))}], "
                             f"got {got}; optimize with example= of that size (or backend='auto' to run other "
                             "sizes on the torch model)")
        if not fits:
            return self._torch(x, *args, **kwargs)
        key = tuple(x.shape)
        pick = self._picked.get(key)
        if pick is None:
            if len(self._picked) >= self.max_shapes:
                return self.runner(x)
            pick = self._picked[key] = self._race(x)
        return self.runner(x) if pick == "onnxruntime" else self._torch(x)


class OptimizedModel(nn.Module):
    """Inference wrapper: converts inputs (memory format, dtype), runs under inference mode.

    ``model`` is the (folded, converted) network; attributes it has (``pretrained_cfg``,
    ``num_classes``, ...) are reachable on the wrapper. ``report`` says what was applied.
    """

    max_traced_shapes = 4

    def __init__(self, model: nn.Module, runner: Any = None, *, channels_last: bool = False,
                 dtype: torch.dtype | None = None, inference_mode: bool = True, jit: bool = False,
                 report: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_runner", runner if runner is not None else model)  # not a submodule
        self.channels_last = channels_last
        self.dtype = dtype
        self.use_inference_mode = inference_mode
        self.jit = jit and runner is None
        self._traced: dict[tuple[Any, ...], Any] = {}
        self.report = dict(report or {})
        if self.jit:
            self.report.setdefault("jit_traced_shapes", 0)

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
            x = self._convert(x)
            if self.jit and not args and not kwargs and isinstance(x, torch.Tensor):
                out = self._jit_runner(x)(x)
            else:
                out = self._runner(x, *args, **kwargs)
        if self.dtype is not None:
            out = tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, out)
        return out

    def _jit_runner(self, x: torch.Tensor) -> Any:
        """A traced, frozen TorchScript graph for this input shape, verified against the model on
        its first input; the model itself when tracing fails, disagrees or the cache is full."""
        key = (tuple(x.shape), x.dtype, x.device, x.is_contiguous(memory_format=torch.channels_last))
        fn = self._traced.get(key)
        if fn is not None:
            return fn
        if len(self._traced) >= self.max_traced_shapes:
            return self._runner
        fn = self._runner
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.no_grad():
                    traced = torch.jit.freeze(torch.jit.trace(self.model, (x,), check_trace=False).eval())
                    traced = torch.jit.optimize_for_inference(traced)
                    ref, got = self.model(x), traced(x)
            ok, msg = outputs_close(got, ref, self.dtype)
            if ok:
                fn = traced
                self.report["jit_traced_shapes"] = self.report.get("jit_traced_shapes", 0) + 1
            else:
                self.report["jit_error"] = f"traced graph disagrees for input {tuple(x.shape)}: {msg}"
        except Exception as e:  # noqa: BLE001 - any tracing problem: run the model eagerly
            self.report["jit_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if "jit_error" in self.report and fn is self._runner:
            warnings.warn(f"optimize(jit=True): running eagerly for input {tuple(x.shape)}: "
                          f"{self.report['jit_error']}", stacklevel=3)
        self._traced[key] = fn
        return fn

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


def _to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last for every 4-D parameter and buffer; others (e.g. Conv3d's 5-D weights, which
    ``Module.to(memory_format=channels_last)`` rejects) keep their layout."""
    with torch.no_grad():
        for module in model.modules():
            for tensors in (module._parameters, module._buffers):
                for t in tensors.values():
                    if t is not None and t.dim() == 4:
                        t.data = t.data.contiguous(memory_format=torch.channels_last)
    return model


def mkl_packed_linear_available() -> bool:
    """Whether PyTorch exposes MKL's packed-weight GEMM (``torch.ops.mkl._mkl_linear``, the kernel
    Inductor's weight freezing uses for float32 linears on CPU)."""
    try:
        return bool(torch.backends.mkl.is_available()) and hasattr(torch.ops.mkl, "_mkl_linear")
    except (AttributeError, RuntimeError):
        return False


class PackedLinear(nn.Linear):
    """``nn.Linear`` whose float32 CPU calls run MKL's packed-weight GEMM.

    MKL re-lays the weight out for its micro-kernel once per row count (batch x tokens) instead of
    on every call; that saves most at small row counts (batch-1 transformers: ViT-S 1.08-1.19x over
    eager in same-process runs, ``docs/export.md``). Packed copies are cached for up to :attr:`max_shapes` row counts; any
    other call (other dtype or device, gradients, more row counts) is a plain ``F.linear``. The
    parameters, and so the state dict, are the ``nn.Linear``'s.
    """
    max_shapes = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self.__dict__.setdefault("_packed", {})
        rows = x.numel() // self.in_features if self.in_features else 0
        if (rows == 0 or x.dtype != torch.float32 or x.device.type != "cpu" or self.weight.dtype != torch.float32
                or torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        w = packed.get(rows)
        if w is None:
            if len(packed) >= self.max_shapes or self.__dict__.get("_pack_failed"):
                return F.linear(x, self.weight, self.bias)
            try:
                w = packed[rows] = torch.ops.mkl._mkl_reorder_linear_weight(self.weight.detach(), rows)
            except RuntimeError:  # this build or weight cannot be packed: plain linear from now on
                self.__dict__["_pack_failed"] = True
                return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(rows, self.in_features).contiguous()
        bias = None if self.bias is None else self.bias.detach()
        y = torch.ops.mkl._mkl_linear(x2, w, self.weight.detach(), bias, rows)
        return y.reshape(*x.shape[:-1], self.out_features)


def pack_linears(model: nn.Module) -> int:
    """Turn every plain float32 ``nn.Linear`` into a :class:`PackedLinear` (in place; same
    parameters). Returns how many; 0 when MKL's packed GEMM is not in this PyTorch build."""
    if not mkl_packed_linear_available():
        return 0
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear and module.weight.dtype == torch.float32:
            module.__class__ = PackedLinear
            n += 1
    return n


def reparameterize_modules(model: nn.Module) -> int:
    """Call ``reparameterize()`` on every module that defines it, deepest first (re-parameterisable
    blocks fold their training-time branches into one conv). Returns how many were called."""
    mods = [m for m in model.modules() if callable(getattr(m, "reparameterize", None))]
    with torch.no_grad():
        for m in reversed(mods):
            m.reparameterize()
    return len(mods)


def optimize(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    reparam: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    dtype: torch.dtype | str | None = None,
    fused_attn: bool = True,
    inference_mode: bool = True,
    img_size: int | Sequence[int] | None = None,
    example: torch.Tensor | None = None,
    compile_mode: str | None = None,
    jit: bool = False,
    verify: bool = False,
    backend: str = "auto",
    calibration: Any = None,
    threads: int | None = None,
    pack_linear: bool = True,
    tune_malloc: bool = True,
) -> OptimizedModel:
    """Return a faster inference-only version of ``model`` (modified in place, then wrapped).

    Args:
        fold_bn: fold BatchNorm into the preceding convolution (exact up to float round-off).
        reparam: call ``reparameterize()`` on every module that has one (RepVGG / MobileOne-style
            blocks fuse their training-time branches into one conv; exact up to round-off).
        channels_last: NHWC weights and inputs (fast oneDNN convolutions on CPU).
        compile: ``torch.compile`` with Inductor and weight freezing, when
            :func:`compile_available` (else a warning). The first call of each input shape
            compiles (half a minute or more on a small CPU); later calls reuse it.
        dtype: ``None`` / ``'auto'``: bfloat16 when :func:`bf16_supported`, else float32;
            ``torch.float32`` / ``'float32'``: exact float32; ``torch.bfloat16`` / ``'bfloat16'``:
            bfloat16 even without native support (slow). Outputs are float32 either way.
        fused_attn: switch attention modules to ``F.scaled_dot_product_attention``.
        inference_mode: run ``forward`` under :func:`torch.inference_mode`.
        img_size, example: input used for the BatchNorm-folding trace and ``verify``
            (default: the model's cfg input size, batch 1).
        compile_mode: ``torch.compile`` mode (e.g. ``'max-autotune'``).
        jit: per input shape, trace + freeze + ``optimize_for_inference`` with TorchScript on
            the first call (verified against the model on that input; eager fallback). Cuts
            Python overhead (mostly helps small batches of mobile nets); TorchScript is
            deprecated in torch >= 2.10, hence opt-in. Ignored when ``compile`` is used.
        verify: compare the optimized output on ``example`` with the eager one and raise if it
            is outside tolerance (float32: 1e-4 relative to the logit scale; bf16: :func:`bf16_close`).
        backend: ``'torch'`` (eager, optionally compiled), ``'onnxruntime'`` (export to ONNX and run
            it in ONNX Runtime with every graph optimisation: fused LayerNorm / GELU / MatMul+bias,
            Conv+activation; export costs seconds to a minute once, on this call) or ``'auto'``
            (default): float32 through ONNX Runtime when it is installed and the model exports,
            raced on the first call of each input shape against the folded channels-last torch
            model, the faster kept (``report['backend_by_shape']``; ORT wins on the CNNs, on some
            CPUs torch's GEMMs win on transformers at larger batches:
            ``benchmarks/results/inference_speed.md``); the torch path when ``compile``, ``jit``
            or bfloat16 is asked for (or resolved from ``dtype='auto'`` on CPUs with native
            bfloat16). Under ``'auto'`` an input of another image size than ``example`` runs on
            the torch model; under ``'onnxruntime'`` it is an error.
        calibration: with ``dtype='int8'``: images to calibrate on (folder, tensor or batches);
            int8 always runs through ONNX Runtime, see :func:`visionzoo.deploy.onnxrt.quantize`.
        threads: intra-op threads of the ONNX Runtime session (default ``torch.get_num_threads()``).
        pack_linear: float32 on the torch path (including the twin that ``'auto'`` races against
            ONNX Runtime): run ``nn.Linear`` layers through MKL's packed-weight GEMM
            (:class:`PackedLinear`); not with ``jit`` / ``compile``, which trace the model.
        tune_malloc: let glibc's malloc keep freed activation memory for the next call instead of
            faulting in fresh pages (:func:`visionzoo.deploy.allocator.tune_malloc`: process-wide,
            once; 10-20 % on transformers and ConvNeXt; ``report['malloc']`` says what was done).

    Returns:
        :class:`OptimizedModel`; ``.report`` lists what was applied (folded pairs, compile, dtype).
    """
    if isinstance(model, OptimizedModel):
        raise ValueError("model is already optimized")
    if backend not in ("torch", "onnxruntime", "auto"):
        raise ValueError(f"backend must be 'torch', 'onnxruntime' or 'auto', got {backend!r}")
    if isinstance(dtype, str) and dtype.lower() in ("int8", "qint8"):
        if calibration is None:
            raise ValueError("dtype='int8' needs calibration images (a folder, a tensor or batches)")
        from .onnxrt import quantize

        reparameterize_modules(model.eval())
        return quantize(model, calibration, threads=threads, verify=True)
    report: dict[str, Any] = {}
    if tune_malloc:
        from .allocator import tune_malloc as _tune

        report["malloc"] = _tune()
    model.eval()
    if example is None:
        example = example_input(model, img_size)
    ref = None
    if verify:
        with torch.inference_mode():
            ref = model(example)

    dtype = _resolve_dtype(dtype)
    fallback = backend == "auto"
    if fallback:  # ONNX Runtime for float32 where it is installed, the torch path for what only torch does
        from .onnxrt import ort_available

        torch_only = compile or jit or dtype is not None
        ort_ok, why = ort_available() if not torch_only else (False, "")
        backend = "onnxruntime" if ort_ok else "torch"
        if why:  # say why the faster float32 path was not taken
            report["onnxruntime_error"] = why
    if backend == "onnxruntime":  # ORT runs the float32 graph in its own (NCHW) layout
        channels_last, dtype = False, None

    t0 = time.perf_counter()
    if reparam:
        report["reparameterized"] = reparameterize_modules(model)
    if fold_bn:
        report["folded_bn"] = len(fold_batchnorm(model, example))
    if fused_attn:
        report["fused_attn_modules"] = _set_fused_attn(model, True)
    if channels_last:
        model = _to_channels_last(model)
    if dtype is not None:
        model = model.to(dtype)
    report["channels_last"] = channels_last
    report["dtype"] = str(dtype or torch.float32).replace("torch.", "")
    for p in model.parameters():
        p.requires_grad_(False)

    runner: Any = model
    if backend == "onnxruntime":
        from .onnxrt import ort_session

        try:
            with torch.inference_mode(False), torch.no_grad():
                runner, info = ort_session(model, example.contiguous(), threads=threads)
            report.update(info)
            if fallback:  # the torch twin runs other sizes and races ONNX Runtime per shape: give it NHWC
                model = _to_channels_last(model)
                report["torch_channels_last"] = True  # 'channels_last' stays False: ORT's graph is NCHW
            runner = _FixedShapeRunner(runner, model if fallback else None, tuple(example.shape[1:]),
                                       channels_last=fallback)
            compile = False
        except Exception as e:  # noqa: BLE001 - 'auto' keeps the (already folded) torch model
            if not fallback:
                raise
            runner = model
            backend = report["backend"] = "torch"
            report["onnxruntime_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    # float32 eager torch runs the model (alone, or as the twin 'auto' races against ONNX Runtime):
    # pack its linears, after any export (which must see plain ones); jit / compile trace the model
    torch_runs = backend == "torch" or getattr(runner, "fallback", None) is not None
    if pack_linear and torch_runs and dtype is None and not (compile or jit):
        report["packed_linears"] = pack_linears(model)
    if compile:
        ok, why = compile_available()
        if ok:
            runner = torch.compile(model, mode=compile_mode, dynamic=False,
                                   options=None if compile_mode else {"freezing": True})
        else:
            warnings.warn(f"torch.compile skipped: {why}", stacklevel=2)
            compile = False
    report["compiled"] = bool(compile)
    report["prepare_s"] = round(time.perf_counter() - t0, 3)

    out_model = OptimizedModel(model, runner if runner is not model else None, channels_last=channels_last,
                               dtype=dtype, inference_mode=inference_mode, jit=jit, report=report)
    if isinstance(runner, _FixedShapeRunner):
        runner.report = out_model.report  # the per-shape backend choices land in the model's report
    if verify:
        got = out_model(example)
        ok, msg = outputs_close(got, ref, dtype)
        if not ok:
            raise RuntimeError(f"optimized model differs from eager: {msg}")
        out_model.report["verified_max_abs_diff"] = max_abs_diff(got, ref)
    return out_model


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``None`` for float32, else ``torch.bfloat16``."""
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        return torch.bfloat16 if bf16_supported() else None
    if isinstance(dtype, str):
        key = dtype.lower().replace("torch.", "")
        names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
                 "float32": torch.float32, "float": torch.float32}
        if key not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bfloat16' or 'float32'")
        dtype = names[key]
    if dtype == torch.float32:
        return None
    if dtype != torch.bfloat16:
        raise ValueError(f"optimize supports float32 and bfloat16 on CPU, got {dtype}")
    if not bf16_supported():
        warnings.warn("this CPU has no native bfloat16 support; bfloat16 will be slow", stacklevel=3)
    return dtype
