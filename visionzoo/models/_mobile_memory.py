"""Training-memory remedies for the mobile-block family.

EfficientNets store far more activations than their parameter count suggests: every
inverted-residual block keeps about seven expanded-width tensors for backward (1x1 conv output,
BN output, activation output, the same after the depthwise conv, and the SE-gated map), while
the compute sits almost entirely in the convolutions. The remedies, from cheapest:

``memory_efficient="inplace"``
    residual adds and ReLU/ReLU6 after a norm run in place (never on a tensor backward needs).
``memory_efficient="act"`` (includes "inplace")
    batch norm + activation run as one autograd function that keeps only the norm's input; the
    normalised value and the activation (swish, hard-swish, ReLU, GELU...) are recomputed in
    backward (:func:`visionzoo.layers.activations_me.batch_norm_act_me`).
``memory_efficient="block"`` or ``True`` (includes "act")
    each block (and the stem) keeps only its convolution outputs; norms, activations and SE
    gating are recomputed from them in backward (selective activation checkpointing). The
    recompute re-normalises with the batch statistics recorded by the first run, so it costs one
    pass per norm instead of two reductions and a pass.
``set_grad_checkpointing()``
    each stage keeps only its input and is recomputed in full in backward.

Batch norm is fused with its activation for the BN variants only; group/layer/EvoNorm variants
keep their own modules (and are simply recomputed in "block" mode). Recomputation never updates
batch-norm running statistics a second time: regions run through :func:`checkpoint_region` flag
their re-run (:func:`is_recomputing`), and the family's batch norms then use momentum 0 and leave
``num_batches_tracked`` alone. Outputs are identical to the plain model and gradients agree to
float32 rounding (``tests/test_efficientnet.py``).
"""
from __future__ import annotations

import contextvars
from functools import partial
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ..layers.activations_me import act_me_name, batch_norm_act_me
from ..layers.config import is_scriptable
from ..layers.norm_act import BatchNormAct2d

__all__ = ["is_recomputing", "checkpoint_region", "MobileBatchNormAct2d", "BatchNormActMe2d",
           "apply_memory_efficient", "MEMORY_LEVELS"]

MEMORY_LEVELS = ("inplace", "act", "block")
_RECOMPUTING: contextvars.ContextVar[bool] = contextvars.ContextVar("mobile_recomputing", default=False)
# per checkpointed call: batch statistics recorded by the first run, replayed (in order) by the re-run
_STATS: contextvars.ContextVar[list | None] = contextvars.ContextVar("mobile_bn_stats", default=None)
_aten = torch.ops.aten
# compute-heavy ops whose outputs are kept by the "block" policy; everything else is recomputed
_SAVE_OPS = {
    _aten.convolution.default, _aten.mm.default, _aten.addmm.default, _aten.bmm.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def is_recomputing() -> bool:
    """True while a checkpointed region re-runs its forward during backward."""
    return _RECOMPUTING.get()


def _keep_conv_outputs(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_region(fn: Callable[..., torch.Tensor], *args: torch.Tensor, selective: bool = False) -> torch.Tensor:
    """Run ``fn`` under activation checkpointing; its re-run in backward sets :func:`is_recomputing`.

    ``selective=True`` keeps the outputs of convolutions / matmuls and recomputes only the
    element-wise work; otherwise everything inside ``fn`` is recomputed.
    """
    calls = [0]
    stats: list = []

    def run(*a: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        first = calls[0] == 1
        tokens = (_RECOMPUTING.set(_RECOMPUTING.get() or not first),
                  _STATS.set(stats if first else iter(list(stats))))
        try:
            return fn(*a)
        finally:
            _STATS.reset(tokens[1])
            _RECOMPUTING.reset(tokens[0])

    if selective:
        return checkpoint(run, *args, use_reentrant=False,
                          context_fn=partial(create_selective_checkpoint_contexts, _keep_conv_outputs))
    return checkpoint(run, *args, use_reentrant=False)


class MobileBatchNormAct2d(BatchNormAct2d):
    """``BatchNormAct2d`` that leaves running statistics alone while being recomputed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_mobile(x)

    def _forward_mobile(self, x: torch.Tensor) -> torch.Tensor:
        # (no ``super().forward()`` anywhere here: TorchScript cannot compile it.) Recomputation
        # only happens in eager checkpointed regions; TorchScript never sees the context variable.
        if self.training and not torch.jit.is_scripting():
            if _RECOMPUTING.get():
                x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, 0.0,
                                 self.eps)
                return self.act(x)
        return self.act(self._batch_norm(x))


class BatchNormActMe2d(MobileBatchNormAct2d):
    """Batch norm + activation that keeps only its input for backward (same state dict).

    Inside a checkpointed region the first run records its batch statistics and the re-run in
    backward replays them, so the recompute is a single multiply-add + activation. The fused
    autograd function is eager-only: a scripted model normalises like :class:`MobileBatchNormAct2d`
    (same values, ordinary autograd memory).
    """

    me_act = "identity"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and self.track_running_stats and not torch.jit.is_scripting():
            return self._forward_me(x)
        return self._forward_mobile(x)

    @torch.jit.unused
    def _forward_me(self, x: torch.Tensor) -> torch.Tensor:
        record = _STATS.get()
        replay = record is not None and not isinstance(record, list)
        if replay:
            stats, momentum = next(record), 0.0
        else:
            stats = None
            if _RECOMPUTING.get():
                momentum = 0.0
            else:
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        y, mean, invstd = batch_norm_act_me(x, self.weight, self.bias, self.running_mean, self.running_var,
                                            momentum, self.eps, self.me_act, stats)
        if isinstance(record, list):
            record.append((mean, invstd, invstd.pow(-2) - self.eps))
        return y


def _set_inplace(act: nn.Module) -> None:
    if isinstance(act, (nn.ReLU, nn.ReLU6)):
        act.inplace = True


def apply_memory_efficient(model: nn.Module, level: bool | str = True) -> nn.Module:
    """Switch a built mobile-family model to a memory-saving mode (see the module docstring).

    Works in place and keeps the state dict unchanged; returns the model. Under
    ``create_model(..., scriptable=True)`` ``"act"`` and ``"block"`` fall back to ``"inplace"``: the
    fused batch-norm autograd function and the recomputed regions are eager-only (a scripted model
    would compute the same values without their memory savings).
    """
    if level is True:
        level = "block"
    if level is False or level is None:
        return model
    if level not in MEMORY_LEVELS:
        raise ValueError(f"memory_efficient must be a bool or one of {MEMORY_LEVELS}, got {level!r}")
    if level in ("act", "block") and is_scriptable():
        level = "inplace"
    for m in model.modules():
        if hasattr(m, "inplace_add"):
            m.inplace_add = True
        if isinstance(m, BatchNormAct2d):
            _set_inplace(m.act)
            if level in ("act", "block") and type(m) is MobileBatchNormAct2d:
                name = act_me_name(m.act)
                if name is not None:
                    m.__class__ = BatchNormActMe2d
                    m.me_act = name
        if level == "block" and hasattr(m, "selective_recompute"):
            m.selective_recompute = True
    model.memory_efficient = level
    return model
