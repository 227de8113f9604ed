"""Memory-efficient activations: keep only the input, recompute the rest in backward.

Written as autograd functions, ``x * sigmoid(x)`` would keep both ``x`` and ``sigmoid(x)`` for
backward; these keep the input alone and recompute the derivative from it. Fused behind a
batch norm (:func:`batch_norm_act_me`), they go further: the normalised pre-activation is not
kept either, it is recomputed from the norm's input (which batch-norm backward needs anyway), so
a "conv -> BN -> act" unit stores two activation-sized tensors instead of three.

Names: ``silu``/``swish``, ``hard_swish``, ``hard_sigmoid``, ``relu``, ``relu6``, ``gelu``,
``mish``, ``identity``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .activations import GELU, HardSigmoid, HardSwish, Swish

__all__ = ["act_me_name", "activation_me", "batch_norm_act_me", "SwishMe", "HardSwishMe", "HardSigmoidMe",
           "MishMe", "ME_ACTS"]

_aten = torch.ops.aten


# name -> (forward, applied in place on a scratch tensor; backward(grad, pre_activation), which
# may overwrite the pre-activation with the result: it is a recomputed scratch tensor, and reusing
# it saves an activation-sized allocation)
ME_ACTS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "silu": (lambda z: F.silu(z, inplace=True), lambda g, z: _aten.silu_backward.grad_input(g, z, grad_input=z)),
    "hard_swish": (lambda z: F.hardswish(z, inplace=True), lambda g, z: _aten.hardswish_backward.out(g, z, out=z)),
    "hard_sigmoid": (lambda z: F.hardsigmoid(z, inplace=True),
                     lambda g, z: _aten.hardsigmoid_backward.grad_input(g, z, grad_input=z)),
    "relu": (lambda z: z.relu_(), lambda g, z: _aten.threshold_backward.grad_input(g, z, 0.0, grad_input=z)),
    "relu6": (lambda z: z.clamp_(0.0, 6.0),
              lambda g, z: _aten.hardtanh_backward.grad_input(g, z, 0.0, 6.0, grad_input=z)),
    "gelu": (F.gelu, lambda g, z: _aten.gelu_backward.grad_input(g, z, grad_input=z)),
    "mish": (F.mish, _aten.mish_backward),
    "identity": (lambda z: z, lambda g, z: g),
}
_ALIASES = {"swish": "silu", "hardswish": "hard_swish", "hardsigmoid": "hard_sigmoid"}

_MODULE_NAMES: dict[type, str] = {
    nn.SiLU: "silu", Swish: "silu", nn.Hardswish: "hard_swish", HardSwish: "hard_swish",
    nn.Hardsigmoid: "hard_sigmoid", HardSigmoid: "hard_sigmoid", nn.ReLU: "relu", nn.ReLU6: "relu6",
    GELU: "gelu", nn.Mish: "mish", nn.Identity: "identity",
}


def act_me_name(act: nn.Module | str) -> str | None:
    """The memory-efficient counterpart's name of an activation module or name (None if none)."""
    if isinstance(act, str):
        name = _ALIASES.get(act.lower(), act.lower())
        return name if name in ME_ACTS else None
    if isinstance(act, nn.GELU) and act.approximate != "none":
        return None
    if isinstance(act, nn.GELU):
        return "gelu"
    return _MODULE_NAMES.get(type(act))


class _ActMe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, name: str) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.name = name
        return ME_ACTS[name][0](x.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return ME_ACTS[ctx.name][1](grad, x.clone()), None


def activation_me(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply activation ``name`` keeping only ``x`` for backward."""
    name = _ALIASES.get(name, name)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return ME_ACTS[name][0](x.clone())
    return _ActMe.apply(x, name)


class _BatchNormActMe(torch.autograd.Function):
    """Training-mode batch norm + activation that saves only the norm's input and statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, name, stats):  # type: ignore[override]
        if stats is None:
            y, mean, invstd = _aten.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        else:
            # statistics known (a recompute): normalise with them in one pass, no reductions. The
            # same aten op as above, which selective checkpointing requires of a recompute.
            mean, invstd, var = stats
            y = _aten.native_batch_norm(x, weight, bias, mean, var, False, 0.0, eps)[0]
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.eps, ctx.name = eps, name
        ctx.mark_non_differentiable(mean, invstd)
        return ME_ACTS[name][0](y), mean, invstd

    @staticmethod
    def backward(ctx, grad, _gm, _gi):  # type: ignore[override]
        x, weight, bias, mean, invstd = ctx.saved_tensors
        # recompute the pre-activation, then chain activation and batch-norm backward
        gz = ME_ACTS[ctx.name][1](grad, _affine(x, weight, bias, mean, invstd))
        gx, gw, gb = _aten.native_batch_norm_backward(
            gz, x, weight, None, None, mean, invstd, True, ctx.eps,
            [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
             bias is not None and ctx.needs_input_grad[2]])
        return gx, gw, gb, None, None, None, None, None, None


def _affine(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, mean: torch.Tensor,
            invstd: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return torch.addcmul(shift.view(shape), x, scale.view(shape))


def batch_norm_act_me(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                      momentum: float, eps: float, act: str,
                      stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``act(batch_norm(x))`` in training mode, storing only ``x`` (+ per-channel stats) for backward.

    Returns ``(output, batch_mean, batch_invstd)``. Running statistics are updated in place with
    ``momentum`` like ``F.batch_norm``. Passing ``stats = (mean, invstd, var)`` of an earlier
    identical call (a recompute) skips the reductions and leaves the running statistics alone.
    """
    return _BatchNormActMe.apply(x, weight, bias, running_mean, running_var, momentum, eps,
                                 _ALIASES.get(act, act), stats)


class _ActMeModule(nn.Module):
    name = "identity"

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activation_me(x, self.name)


class SwishMe(_ActMeModule):
    """Swish / SiLU that recomputes ``sigmoid(x)`` in backward."""

    name = "silu"


class HardSwishMe(_ActMeModule):
    """Hard-swish keeping only its input for backward."""

    name = "hard_swish"


class HardSigmoidMe(_ActMeModule):
    """Hard-sigmoid keeping only its input for backward."""

    name = "hard_sigmoid"


class MishMe(_ActMeModule):
    """Mish keeping only its input for backward."""

    name = "mish"
