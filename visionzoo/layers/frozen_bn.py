"""Frozen batch norm: a fixed per-channel affine map ``y = x * scale + shift``.

Detection and segmentation backbones are usually fine-tuned with tiny per-device batches, where
batch statistics are noise; there the normalisation is frozen at the pretrained running
statistics. A frozen layer keeps the ``weight`` / ``bias`` / ``running_mean`` / ``running_var``
(and ``num_batches_tracked``) entries of the batch norm it replaces, as buffers, so state_dicts
load unchanged in both directions, but nothing is learned or updated, in train or eval mode:

    scale = weight / sqrt(running_var + eps),   shift = bias - running_mean * scale

:func:`freeze_batch_norm_2d` converts ``BatchNorm2d`` / ``SyncBatchNorm`` layers (and the fused
norm + activation :class:`~visionzoo.layers.norm_act.BatchNormAct2d`) of a module;
:func:`unfreeze_batch_norm_2d` converts them back to trainable layers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .norm_act import BatchNormAct2d

__all__ = ["FrozenBatchNorm2d", "FrozenBatchNormAct2d", "freeze_batch_norm_2d", "unfreeze_batch_norm_2d"]


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (all buffers, nothing trains)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.affine = affine
        # a non-affine batch norm has no weight/bias entries; neither has its frozen form
        self.register_buffer("weight", torch.ones(num_features) if affine else None)
        self.register_buffer("bias", torch.zeros(num_features) if affine else None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        # what the layer was before freezing, so unfreezing restores it
        self.momentum: float | None = 0.1
        self._unfrozen_cls: type = nn.BatchNorm2d

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict, strict: bool,
                              missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
        # checkpoints of frozen layers elsewhere carry no step counter: keep ours
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            state_dict[key] = self.num_batches_tracked
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.running_var + self.eps).rsqrt()
        if self.weight is not None:
            scale = scale * self.weight
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._affine(x)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}" + ("" if self.affine else ", affine=False")


class FrozenBatchNormAct2d(FrozenBatchNorm2d):
    """:class:`FrozenBatchNorm2d` followed by the activation of the ``BatchNormAct2d`` it replaces."""

    def __init__(self, num_features: int, eps: float = 1e-5, act: nn.Module | None = None,
                 affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, affine=affine)
        self._unfrozen_cls = BatchNormAct2d
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._affine(x))


def _copy_stats(dst: nn.Module, src: nn.Module) -> None:
    """Copy weight/bias/running stats (the missing ones stay at the identity map) without autograd."""
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            value = getattr(src, name, None)
            if value is not None and getattr(dst, name, None) is not None:
                target = getattr(dst, name)
                setattr(dst, name, value.detach().clone().to(target.dtype) if name == "num_batches_tracked"
                        else value.detach().clone())


def _freeze_one(bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
    if isinstance(bn, BatchNormAct2d):
        frozen: FrozenBatchNorm2d = FrozenBatchNormAct2d(bn.num_features, eps=bn.eps, act=bn.act, affine=bn.affine)
    else:
        frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps, affine=bn.affine)
    device = next((t.device for t in bn.state_dict().values()), None)
    if device is not None:
        frozen.to(device)
    _copy_stats(frozen, bn)
    frozen.momentum = bn.momentum
    frozen._unfrozen_cls = type(bn) if not isinstance(bn, nn.SyncBatchNorm) else nn.BatchNorm2d
    frozen.train(bn.training)
    return frozen


def _unfreeze_one(frozen: FrozenBatchNorm2d) -> nn.BatchNorm2d:
    cls = frozen._unfrozen_cls
    kwargs: dict[str, Any] = dict(eps=frozen.eps, momentum=frozen.momentum, affine=frozen.affine)
    if isinstance(frozen, FrozenBatchNormAct2d):
        kwargs["apply_act"] = False  # the frozen layer's activation module is moved back below
    try:
        bn = cls(frozen.num_features, **kwargs)
    except TypeError:  # a subclass with another constructor: fall back to the base layer
        cls = BatchNormAct2d if isinstance(frozen, FrozenBatchNormAct2d) else nn.BatchNorm2d
        bn = cls(frozen.num_features, **kwargs)
    if isinstance(frozen, FrozenBatchNormAct2d):
        bn.act = frozen.act
    bn.to(device=frozen.running_mean.device, dtype=frozen.running_mean.dtype)
    with torch.no_grad():
        if frozen.affine:
            bn.weight.copy_(frozen.weight)
            bn.bias.copy_(frozen.bias)
        bn.running_mean.copy_(frozen.running_mean)
        bn.running_var.copy_(frozen.running_var)
        bn.num_batches_tracked.copy_(frozen.num_batches_tracked)
    bn.train(frozen.training)
    return bn


def _is_freezable(m: nn.Module) -> bool:
    return (isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)) and m.running_mean is not None
            and m.running_var is not None)


def freeze_batch_norm_2d(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` / ``SyncBatchNorm`` (incl. ``BatchNormAct2d``) by a frozen layer.

    A batch norm passed in directly is converted and returned; any other module is walked and
    its batch norms are replaced in place (the same module is returned). State_dict keys and,
    in eval mode, outputs are unchanged. Layers without running statistics
    (``track_running_stats=False``) have nothing to freeze at and are left as they are.
    """
    if _is_freezable(module):
        return _freeze_one(module)  # type: ignore[arg-type]
    for name, child in module.named_children():
        new = freeze_batch_norm_2d(child)
        if new is not child:
            setattr(module, name, new)
    return module


def unfreeze_batch_norm_2d(module: nn.Module) -> nn.Module:
    """Inverse of :func:`freeze_batch_norm_2d`: frozen layers become trainable batch norms again
    (the class they had before freezing; ``SyncBatchNorm`` comes back as ``BatchNorm2d``)."""
    if isinstance(module, FrozenBatchNorm2d):
        return _unfreeze_one(module)
    for name, child in module.named_children():
        new = unfreeze_batch_norm_2d(child)
        if new is not child:
            setattr(module, name, new)
    return module
