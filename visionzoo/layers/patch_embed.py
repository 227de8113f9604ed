"""Image to patch tokens: a strided conv (Dosovitskiy et al., 2021), plus patch-size resampling of
its kernel (FlexiViT "PI-resize", Beyer et al., 2023, https://arxiv.org/abs/2212.08013)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import to_2tuple

__all__ = ["PatchEmbed", "resample_patch_embed"]

_FORMATS = ("NLC", "NHWC", "NCHW")


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping ``patch_size`` patches and project each to ``embed_dim``.

    Args:
        img_size: expected input size; ``None`` accepts any size (no grid is precomputed).
        patch_size: patch (and conv kernel/stride) size.
        norm_layer: optional norm over the embedded tokens (applied channels-last).
        output_fmt: ``'NLC'`` (flattened tokens), ``'NHWC'`` or ``'NCHW'`` grid.
        bias: conv bias (CLIP-style stems have none).
        strict_img_size: raise when the input size is not ``img_size``.
        dynamic_img_pad: zero-pad the bottom/right so any size divides into patches.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] | None = 224,
        patch_size: int | Sequence[int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Callable[..., nn.Module] | None = None,
        output_fmt: str = "NLC",
        bias: bool = True,
        strict_img_size: bool = True,
        dynamic_img_pad: bool = False,
    ) -> None:
        super().__init__()
        if output_fmt not in _FORMATS:
            raise ValueError(f"output_fmt must be one of {_FORMATS}, got {output_fmt!r}")
        self.patch_size = to_2tuple(patch_size)
        self.img_size: tuple[int, int] | None = to_2tuple(img_size) if img_size is not None else None
        if self.img_size is not None:
            self.grid_size: tuple[int, int] | None = (self.img_size[0] // self.patch_size[0],
                                                      self.img_size[1] // self.patch_size[1])
            self.num_patches: int | None = self.grid_size[0] * self.grid_size[1]
        else:
            self.grid_size, self.num_patches = None, None
        self.output_fmt = output_fmt
        self.strict_img_size = strict_img_size
        self.dynamic_img_pad = dynamic_img_pad
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def feat_ratio(self) -> tuple[int, int]:
        return self.patch_size

    def dynamic_feat_size(self, img_size: Sequence[int]) -> tuple[int, int]:
        """Token grid for an input of ``img_size`` (rounded up when padding is enabled)."""
        if self.dynamic_img_pad:
            return math.ceil(img_size[0] / self.patch_size[0]), math.ceil(img_size[1] / self.patch_size[1])
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        img_size = self.img_size  # a local and a nested if: TorchScript refines it (or drops the block if None)
        strict = False
        if img_size is not None:
            strict = self.strict_img_size
            if strict and (h != img_size[0] or w != img_size[1]):
                raise ValueError(f"input size ({h}, {w}) does not match the model's img_size {img_size}; "
                                 f"create the model with img_size=({h}, {w}) or dynamic_img_size=True")
        if self.dynamic_img_pad:
            pad_h = (-h) % self.patch_size[0]
            pad_w = (-w) % self.patch_size[1]
            x = F.pad(x, (0, pad_w, 0, pad_h))
        elif not strict and (h % self.patch_size[0] or w % self.patch_size[1]):
            # at the model's own size a remainder is dropped by the strided conv (e.g. 384 px with
            # 14 px patches: a 27x27 grid, as the published models are defined); elsewhere it is an error
            raise ValueError(f"input size ({h}, {w}) is not divisible by patch size {self.patch_size}; "
                             f"use dynamic_img_pad=True to pad")
        x = self.proj(x)
        if self.output_fmt == "NCHW":
            return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x.permute(0, 2, 3, 1)  # B, H, W, C
        if self.output_fmt == "NLC":
            x = x.flatten(1, 2)
        return self.norm(x)


def resample_patch_embed(weight: torch.Tensor, new_size: Sequence[int], interpolation: str = "bicubic",
                         antialias: bool = True) -> torch.Tensor:
    """Resize a patch-embedding kernel ``[O, I, h, w]`` to ``new_size`` so tokens keep their value.

    With ``R`` the linear map that resizes a patch from ``(h, w)`` to ``new_size``, the new kernel
    ``w'`` solves ``R^T w' = w`` in the least-squares sense (``w' = pinv(R^T) w``), so
    ``<R x, w'> = <x, w>``: an image resized by ``R`` yields the same tokens as the original.
    """
    new_size = (int(new_size[0]), int(new_size[1]))
    old_size = tuple(weight.shape[-2:])
    if old_size == new_size:
        return weight
    n_old = old_size[0] * old_size[1]
    basis = torch.eye(n_old, dtype=torch.float32, device=weight.device).reshape(n_old, 1, *old_size)
    aa = antialias and interpolation in ("bilinear", "bicubic")
    align = False if interpolation in ("bilinear", "bicubic") else None
    resized = F.interpolate(basis, size=new_size, mode=interpolation, antialias=aa, align_corners=align)
    resize_mat = resized.reshape(n_old, -1).t().double()  # [n_new, n_old]: R x = resized x
    pinv = torch.linalg.pinv(resize_mat.t())  # [n_new, n_old]
    out_ch, in_ch = weight.shape[:2]
    w = weight.reshape(out_ch * in_ch, n_old).double() @ pinv.t()
    return w.reshape(out_ch, in_ch, *new_size).to(weight.dtype)
