"""RepGhost (Chen et al., 2022, "RepGhost: A Hardware-Efficient Ghost Module via
Re-parameterization", https://arxiv.org/abs/2211.06088).

GhostNet reuses features by *concatenating* intrinsic and cheap maps, which costs memory traffic
on hardware. RepGhost reuses them by *adding* instead: the module's output is
``dwconv_bn(x1) + bn(x1)`` with ``x1`` the 1x1 conv's output, where the identity-BN branch is
folded into the depthwise conv for inference (:meth:`RepGhostModule.reparameterize`), leaving
``1x1 conv -> 3x3 depthwise conv`` with no concatenation. The network is GhostNet's layout with
half-width expansions and a doubled last conv.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .base import Variant, register_family
from .ghostnet import GhostNet, _identity_kernel, fuse_conv_bn

__all__ = ["RepGhostModule", "VARIANTS"]

# k, mid (expansion width), out, se ratio, stride
_CFG = (
    ((3, 8, 16, 0, 1),),
    ((3, 24, 24, 0, 2),),
    ((3, 36, 24, 0, 1),),
    ((5, 36, 40, 0.25, 2),),
    ((5, 60, 40, 0.25, 1),),
    ((3, 120, 80, 0, 2),),
    ((3, 100, 80, 0, 1), (3, 120, 80, 0, 1), (3, 120, 80, 0, 1), (3, 240, 112, 0.25, 1), (3, 336, 112, 0.25, 1)),
    ((5, 336, 160, 0.25, 2),),
    ((5, 480, 160, 0, 1), (5, 480, 160, 0.25, 1), (5, 480, 160, 0, 1), (5, 480, 160, 0.25, 1)),
)


class RepGhostModule(nn.Module):
    """1x1 conv+BN(+ReLU) -> (3x3 depthwise conv+BN + identity BN) -> [ReLU]."""

    def __init__(self, in_chs: int, out_chs: int, *, use_act: bool = True, dw_size: int = 3) -> None:
        super().__init__()
        self.chs, self.dw_size = out_chs, dw_size
        self.primary_conv = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs),
                                          nn.ReLU(inplace=True) if use_act else nn.Identity())
        self.fusion_bn: Optional[nn.Module] = nn.Sequential(nn.BatchNorm2d(out_chs))
        self.cheap_operation: nn.Module = nn.Sequential(
            nn.Conv2d(out_chs, out_chs, dw_size, 1, dw_size // 2, groups=out_chs, bias=False),
            nn.BatchNorm2d(out_chs))
        self.relu = nn.ReLU(inplace=False) if use_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        if self.fusion_bn is not None:
            x2 = x2 + self.fusion_bn(x1)
        return self.relu(x2)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the identity-BN branch and the depthwise conv's BN into one depthwise conv."""
        if self.fusion_bn is None:
            return
        conv, bn = self.cheap_operation[0], self.cheap_operation[1]
        w, b = fuse_conv_bn(conv.weight, bn)
        wi, bi = fuse_conv_bn(_identity_kernel(self.chs, self.chs, self.dw_size, w), self.fusion_bn[0])
        fused = nn.Conv2d(self.chs, self.chs, self.dw_size, 1, self.dw_size // 2, groups=self.chs, bias=True,
                          device=w.device, dtype=w.dtype)
        fused.weight.copy_(w + wi)
        fused.bias.copy_(b + bi)
        self.cheap_operation = fused
        self.fusion_bn = None


_rep = Variant(GhostNet, cfg=_CFG, ghost_module=RepGhostModule, final_mult=2.0)
VARIANTS: dict[str, Variant] = {
    "repghostnet_050": _rep.but(width=0.5),
    "repghostnet_058": _rep.but(width=0.58),
    "repghostnet_080": _rep.but(width=0.8),
    "repghostnet_100": _rep,
    "repghostnet_111": _rep.but(width=1.11),
    "repghostnet_130": _rep.but(width=1.3),
    "repghostnet_150": _rep.but(width=1.5),
    "repghostnet_200": _rep.but(width=2.0),
}

register_family("repghost", VARIANTS)
