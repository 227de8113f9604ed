"""Building the model to fine-tune: a backbone with a new linear head or a small MLP head."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

__all__ = ["MlpHeadClassifier", "build_train_model", "freeze_backbone", "set_frozen_norms_eval", "HEADS"]

HEADS = ("linear", "mlp")


class MlpHeadClassifier(nn.Module):
    """``backbone`` (created with ``num_classes=0``, so it returns pooled features) followed by
    ``Linear(num_features, hidden) -> ReLU -> Dropout -> Linear(hidden, num_classes)``.

    Behaves like a visionzoo model for training: ``num_features``, ``num_classes``,
    ``forward_features``, ``forward_head``, ``get_classifier``, ``reset_classifier``,
    ``set_grad_checkpointing`` and ``pretrained_cfg`` pass through to the backbone.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        nf = getattr(backbone, "num_features", None)
        if not isinstance(nf, int):
            raise TypeError(f"{type(backbone).__name__} has no integer num_features; cannot attach an MLP head")
        self.backbone = backbone
        self.num_features, self.num_classes, self.hidden = nf, num_classes, hidden
        self.head = nn.Sequential(nn.Linear(nf, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, num_classes))
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", None)
        if hasattr(backbone, "in_chans"):
            self.in_chans = backbone.in_chans

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x, pre_logits=True)
        return self.head[:-1](x) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head[-1] = nn.Linear(self.hidden, num_classes) if num_classes > 0 else nn.Identity()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)


def build_train_model(model: str, num_classes: int, in_chans: int | None = None, pretrained: bool = False,
                      head: str = "linear", head_hidden: int = 512, head_dropout: float = 0.2,
                      drop_rate: float | None = None, drop_path_rate: float | None = None,
                      initial_checkpoint: str | None = None, **kwargs: Any) -> nn.Module:
    """``create_model`` with a fresh head for ``num_classes`` (``head='mlp'`` adds the MLP head)."""
    from ..factory import create_model

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be ≥ 1 for training, got {num_classes}")
    net = create_model(model, pretrained=pretrained, num_classes=0 if head == "mlp" else num_classes,
                       in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                       checkpoint_path=initial_checkpoint, **kwargs)
    if head == "mlp":
        net = MlpHeadClassifier(net, num_classes, head_hidden, head_dropout)
    return net


def model_info(cfg: Mapping[str, Any], num_classes: int, in_chans: int) -> dict[str, Any]:
    """What a checkpoint records to rebuild the trained model (see :func:`build_train_model`)."""
    return {"model": cfg["model"], "num_classes": num_classes, "in_chans": in_chans, "head": cfg.get("head", "linear"),
            "head_hidden": cfg.get("head_hidden", 512), "head_dropout": cfg.get("head_dropout", 0.2)}


def _classifier_params(model: nn.Module) -> list[nn.Parameter]:
    get_cls = getattr(model, "get_classifier", None)
    if not callable(get_cls):
        raise TypeError(f"{type(model).__name__} has no get_classifier(); cannot freeze the backbone")
    cls = get_cls()
    if not isinstance(cls, nn.Module) or not list(cls.parameters()):
        raise ValueError("the classifier has no parameters (num_classes=0?); nothing would train")
    return list(cls.parameters())


def freeze_backbone(model: nn.Module) -> int:
    """Train only the classifier: every other parameter gets ``requires_grad=False``; returns #trainable."""
    keep = {id(p) for p in _classifier_params(model)}
    n = 0
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
        n += p.numel() if id(p) in keep else 0
    return n


def set_frozen_norms_eval(model: nn.Module) -> None:
    """Put BatchNorm layers without trainable parameters into eval mode (frozen running stats)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
