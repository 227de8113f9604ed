"""Optimizer factory: parameter groups without weight decay for norms/biases, layer-wise LR decay, LAMB.

Layer ids are derived generically from parameter names, so every family works without hooks:

* the *block key* of a parameter is the name prefix up to its first index, extended through
  nested indices and ``blocks``/``layers``/``stages`` containers: ``blocks.3.attn.qkv.weight``
  -> ``blocks.3``; ``stages.1.blocks.2.mlp.fc1.weight`` -> ``stages.1.blocks.2``;
  ``layer2.0.conv1.weight`` -> ``layer2.0``; ``blocks.2.1.conv_pw.weight`` -> ``blocks.2.1``;
* block keys get ids 1..K in the order parameters are registered (input to output);
* parameters without a block key (``stem``, ``patch_embed``, ``cls_token``, ``conv1``...) that come
  before the first block get id 0; those after the last block (final norm, ``conv_head``,
  classifier) get id K + 1.

A parameter with id ``i`` of ``L = K + 2`` layers trains at ``lr * layer_decay ** (L - 1 - i)``.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

import torch
import torch.nn as nn
from torch.optim import Optimizer

__all__ = ["param_layer_ids", "param_groups", "create_optimizer", "Lamb", "OPTIMIZERS"]

_CONTAINERS = {"blocks", "layers", "stages", "features", "stage", "layer"}
_NON_BODY = re.compile(r"(stem|embed|head|classifier|fc_norm|pre_logits)")
_INDEXED_LAYER = re.compile(r"^(layer|stage|block)\d+$")  # resnet 'layer2', some nets 'stage3'


def _is_container(part: str) -> bool:
    return part in _CONTAINERS or bool(_INDEXED_LAYER.match(part))


def _block_key(name: str) -> str | None:
    """The block a parameter belongs to (``None`` for stem/head parameters); see the module doc."""
    parts = name.split(".")
    last = len(parts) - 1  # the parameter's own name is never part of a key
    for i in range(last):
        p = parts[i]
        numbered = p.isdigit() and i > 0 and _is_container(parts[i - 1])
        named = bool(_INDEXED_LAYER.match(p)) and not (i + 1 < last and parts[i + 1].isdigit())
        if not (numbered or named):
            continue
        if any(_NON_BODY.search(q) for q in parts[:i]):
            return None
        j = i
        while j + 1 < last:
            nxt = parts[j + 1]
            if nxt.isdigit():
                j += 1
            elif nxt in _CONTAINERS and j + 2 < last and parts[j + 2].isdigit():
                j += 2
            else:
                break
        return ".".join(parts[:j + 1])
    return None


def param_layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """({parameter name: layer id}, number of layers) for layer-wise LR decay (see module doc)."""
    names = [n for n, _ in model.named_parameters()]
    keys = [_block_key(n) for n in names]
    order: dict[str, int] = {}
    for k in keys:
        if k is not None and k not in order:
            order[k] = len(order) + 1
    num_layers = len(order) + 2
    # names of the classifier's parameters always map to the last layer
    head_params: set[int] = set()
    get_cls = getattr(model, "get_classifier", None)
    if callable(get_cls):
        try:
            cls = get_cls()
            if isinstance(cls, nn.Module):
                head_params = {id(p) for p in cls.parameters()}
        except Exception:
            head_params = set()
    params = dict(model.named_parameters())
    ids: dict[str, int] = {}
    seen_block = False
    for n, k in zip(names, keys):
        if id(params[n]) in head_params:
            ids[n] = num_layers - 1
        elif k is not None:
            ids[n] = order[k]
            seen_block = True
        else:
            ids[n] = num_layers - 1 if seen_block else 0
    return ids, num_layers


def _no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names the model asks to exclude (``model.no_weight_decay()``, e.g. ViT pos_embed/cls_token)."""
    out: set[str] = set()
    for prefix, m in model.named_modules():
        fn = getattr(m, "no_weight_decay", None)
        if callable(fn):
            try:
                for n in fn():
                    out.add(f"{prefix}.{n}" if prefix else n)
            except Exception:
                pass
    return out


def param_groups(model: nn.Module, weight_decay: float = 0.0, layer_decay: float | None = None,
                 no_decay_1d: bool = True) -> list[dict[str, Any]]:
    """Optimizer parameter groups over trainable parameters.

    Biases, norm weights (every parameter with ≤ 1 dimension) and the names in the model's
    ``no_weight_decay()`` get ``weight_decay=0``. With ``layer_decay`` each group also carries an
    ``lr_scale`` that schedulers multiply into the learning rate.
    """
    skip = _no_weight_decay_names(model)
    ids, num_layers = param_layer_ids(model) if layer_decay is not None else ({}, 1)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = (no_decay_1d and (p.ndim <= 1 or name.endswith(".bias"))) or name in skip
        layer = ids.get(name, 0)
        key = (layer, no_wd)
        if key not in groups:
            scale = layer_decay ** (num_layers - 1 - layer) if layer_decay is not None else 1.0
            groups[key] = {"params": [], "weight_decay": 0.0 if no_wd else weight_decay, "lr_scale": scale,
                           "param_names": [], "layer_id": layer}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [groups[k] for k in sorted(groups)]


class Lamb(Optimizer):
    """LAMB (You et al., 2019): Adam moments with a per-parameter trust ratio ``||w|| / ||update||``.

    Decoupled weight decay is part of the update before the trust ratio, as in the paper.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_trust: float = 10.0) -> None:
        if lr <= 0:
            raise ValueError(f"invalid learning rate {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust=max_trust))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                update = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt_().add_(group["eps"]))
                w = p.float()
                if group["weight_decay"] != 0:
                    update.add_(w, alpha=group["weight_decay"])
                w_norm, u_norm = w.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                trust = trust.clamp(max=group["max_trust"])
                p.add_((update * trust).to(p.dtype), alpha=-group["lr"])
        return loss


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "nadam", "radam", "rmsprop", "lamb", "adagrad")


def create_optimizer(model: nn.Module, opt: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.05,
                     momentum: float = 0.9, betas: tuple[float, float] | None = None, eps: float | None = None,
                     layer_decay: float | None = None) -> Optimizer:
    """Build an optimizer over :func:`param_groups` of ``model``.

    ``opt``: ``sgd`` (Nesterov momentum), ``momentum`` (plain momentum), ``nesterov``, ``adam``,
    ``adamw``, ``nadam``, ``radam``, ``rmsprop``, ``lamb``, ``adagrad``. Adam-like optimizers with
    weight decay use the decoupled form (``adamw``); ``adam`` applies L2.
    """
    name = opt.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {opt!r}; choose from {', '.join(OPTIMIZERS)}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer decay must be in (0, 1], got {layer_decay}")
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    kw: dict[str, Any] = {}
    if betas is not None:
        kw["betas"] = tuple(betas)
    if eps is not None:
        kw["eps"] = eps
    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "momentum":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **kw)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **kw)
    if name == "nadam":
        return torch.optim.NAdam(groups, lr=lr, decoupled_weight_decay=True, **kw)
    if name == "radam":
        return torch.optim.RAdam(groups, lr=lr, decoupled_weight_decay=True, **kw)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, momentum=momentum, eps=eps or 0.0316)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, eps=eps or 1e-10)
    return Lamb(groups, lr=lr, **kw)
