"""CoaT (Xu et al., 2021, "Co-Scale Conv-Attentional Image Transformers").

Four resolution stages of *serial blocks*, each stage with its own patch embedding and class token.
Attention is *factorized*: the keys are soft-maxed over the tokens and contracted with the values
first (``softmax(K)^T V``, a ``Ch x Ch`` matrix per head), then read by the queries, so the cost
is linear in the number of tokens. Position enters twice, both by depthwise convolutions on the
image tokens: a *convolutional relative position encoding* (``q * dwconv(v)``, kernel sizes 3/5/7
for different heads) inside the attention and a *convolutional position encoding* (``x +
dwconv(x)``) before each block; each stage shares one of each among all its blocks. The full
models add *parallel blocks* that attend on stages 2-4 side by side and exchange information
across scales by bilinear up/down-sampling; their class tokens are aggregated by a 1x1 conv.
``coat_lite_*`` have the serial stages only.

The position encoders are one module per stage, shared by its serial blocks and (stages 2-4) by
every parallel block, and the parallel MLP is one module under three names (``mlp2``-``mlp4``), so
several checkpoint keys name one tensor (published checkpoints hold equal values under them).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.weight_init import trunc_normal_
from .base import FeatureMixin, Variant, register_family

__all__ = ["CoaT", "CoaTParallel", "FactorAttnConvRelPosEnc", "factorized_attention", "VARIANTS"]

_Size = tuple[int, int]


def _grid(x: torch.Tensor, size: _Size) -> torch.Tensor:
    """``[B, 1 + H*W, C]`` tokens -> ``[B, C, H, W]`` map of the image tokens."""
    return x[:, 1:].transpose(1, 2).reshape(x.shape[0], x.shape[2], size[0], size[1])


def _with_cls(cls_token: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``[B, 1, C]`` class token + ``[B, C, H, W]`` map -> ``[B, 1 + H*W, C]`` tokens."""
    return torch.cat([cls_token, grid.flatten(2).transpose(1, 2)], dim=1)


def factorized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``q (softmax_N(k)^T v)`` over ``[B, heads, N, Ch]``: keys normalised along the tokens."""
    return q @ (k.softmax(dim=2).transpose(-1, -2) @ v)


class ConvPosEnc(nn.Module):
    """``x + dwconv3x3(x)`` on the image tokens; the class token passes unchanged."""

    def __init__(self, dim: int, k: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, k, 1, k // 2, groups=dim)

    def forward(self, x: torch.Tensor, size: _Size) -> torch.Tensor:
        feat = _grid(x, size)
        return _with_cls(x[:, :1], self.proj(feat) + feat)


class ConvRelPosEnc(nn.Module):
    """``q * dwconv(v)`` on the image tokens, heads split among kernel sizes (``{3: 2, 5: 3, 7: 3}``:
    2 heads 3x3, 3 heads 5x5, 3 heads 7x7); zero for the class token."""

    def __init__(self, head_chs: int, num_heads: int, windows: dict[int, int]) -> None:
        super().__init__()
        if sum(windows.values()) != num_heads:
            raise ValueError(f"window heads {windows} must add up to {num_heads}")
        self.splits = [h * head_chs for h in windows.values()]
        self.conv_list = nn.ModuleList([nn.Conv2d(h * head_chs, h * head_chs, k, 1, k // 2, groups=h * head_chs)
                                        for k, h in windows.items()])

    def forward(self, q: torch.Tensor, v: torch.Tensor, size: _Size) -> torch.Tensor:
        b, heads, n, ch = q.shape
        v_img = v[:, :, 1:].transpose(-1, -2).reshape(b, heads * ch, size[0], size[1])
        chunks = torch.split(v_img, self.splits, dim=1)
        conv_v = torch.cat([conv(chunks[i]) for i, conv in enumerate(self.conv_list)], 1)
        conv_v = conv_v.reshape(b, heads, ch, n - 1).transpose(-1, -2)
        return F.pad(q[:, :, 1:] * conv_v, (0, 0, 1, 0))


class FactorAttnConvRelPosEnc(nn.Module):
    """Factorized attention (scaled) plus the convolutional relative position term."""

    def __init__(self, dim: int, num_heads: int, crpe: ConvRelPosEnc, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.crpe = crpe  # shared by the stage's blocks

    def forward(self, x: torch.Tensor, size: _Size) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = self.scale * factorized_attention(q, k, v) + self.crpe(q, v, size)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class SerialBlock(nn.Module):
    """Shared conv position encoding, then a pre-norm factorized-attention / MLP block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, cpe: ConvPosEnc, crpe: ConvRelPosEnc,
                 drop_path: float = 0.0, drop: float = 0.0) -> None:
        super().__init__()
        self.cpe = cpe
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.factoratt_crpe = FactorAttnConvRelPosEnc(dim, num_heads, crpe, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, size: _Size) -> torch.Tensor:
        x = self.cpe(x, size)
        x = x + self.drop_path(self.factoratt_crpe(self.norm1(x), size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _rescale(x: torch.Tensor, factor: float, size: _Size) -> torch.Tensor:
    """Bilinearly rescale the image tokens by ``factor``; the class token passes unchanged."""
    grid = F.interpolate(_grid(x, size), scale_factor=factor, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)
    return _with_cls(x[:, :1], grid)


class ParallelBlock(nn.Module):
    """Attention on scales 2-4 side by side; each scale adds the others' attention outputs,
    bilinearly resized to it, before its residual; then one MLP shared by the scales."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, crpes: Sequence[ConvRelPosEnc],
                 drop_path: float = 0.0, drop: float = 0.0) -> None:
        super().__init__()
        # registration order is the checkpoint's: norm12-14, factoratt_crpe2-4, norm22-24, mlp2-4
        for i in (2, 3, 4):
            setattr(self, f"norm1{i}", nn.LayerNorm(dim, eps=1e-6))
        for i, crpe in zip((2, 3, 4), crpes):
            setattr(self, f"factoratt_crpe{i}", FactorAttnConvRelPosEnc(dim, num_heads, crpe, drop))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        for i in (2, 3, 4):
            setattr(self, f"norm2{i}", nn.LayerNorm(dim, eps=1e-6))
        self.mlp2 = self.mlp3 = self.mlp4 = Mlp(dim, int(dim * mlp_ratio), drop=drop)  # one MLP for all scales

    def forward(self, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor, s2: _Size, s3: _Size,
                s4: _Size) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c2 = self.factoratt_crpe2(self.norm12(x2), s2)
        c3 = self.factoratt_crpe3(self.norm13(x3), s3)
        c4 = self.factoratt_crpe4(self.norm14(x4), s4)
        n2 = c2 + _rescale(c3, 2.0, s3) + _rescale(c4, 4.0, s4)
        n3 = c3 + _rescale(c4, 2.0, s4) + _rescale(c2, 0.5, s2)
        n4 = c4 + _rescale(c3, 0.5, s3) + _rescale(c2, 0.25, s2)
        x2 = x2 + self.drop_path(n2)
        x3 = x3 + self.drop_path(n3)
        x4 = x4 + self.drop_path(n4)
        x2 = x2 + self.drop_path(self.mlp2(self.norm22(x2)))
        x3 = x3 + self.drop_path(self.mlp3(self.norm23(x3)))
        x4 = x4 + self.drop_path(self.mlp4(self.norm24(x4)))
        return x2, x3, x4


_WINDOWS = {3: 2, 5: 3, 7: 3}


class CoaT(FeatureMixin, nn.Module):
    """CoaT-Lite: four serial stages; ``forward_features`` returns the last stage's normed tokens
    ``[B, 1 + H*W, C]`` (class token first)."""

    feature_cfg = {"feature_cls": "getter"}

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "token",
                 patch_size: int = 4, embed_dims: Sequence[int] = (64, 128, 320, 512),
                 serial_depths: Sequence[int] = (2, 2, 2, 2), parallel_depth: int = 0, num_heads: int = 8,
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, img_size: int | Sequence[int] | None = None) -> None:
        # img_size: accepted for checkpoint/cfg compatibility (the cfgs mark CoaT fixed-size); the
        # convolutional position encodings work at any size that the patch strides divide
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.grad_checkpointing = False
        dims = list(embed_dims)
        for i in range(4):
            setattr(self, f"cls_token{i + 1}", nn.Parameter(torch.zeros(1, 1, dims[i])))
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(None, patch_size if i == 0 else 2,
                                                            in_chans if i == 0 else dims[i - 1], dims[i],
                                                            norm_layer=nn.LayerNorm, output_fmt="NHWC"))
        for i in range(4):
            setattr(self, f"cpe{i + 1}", ConvPosEnc(dims[i]))
        for i in range(4):
            setattr(self, f"crpe{i + 1}", ConvRelPosEnc(dims[i] // num_heads, num_heads, _WINDOWS))
        for i in range(4):
            blocks = [SerialBlock(dims[i], num_heads, mlp_ratios[i], getattr(self, f"cpe{i + 1}"),
                                  getattr(self, f"crpe{i + 1}"), drop_path_rate, proj_drop_rate)
                      for _ in range(serial_depths[i])]
            setattr(self, f"serial_blocks{i + 1}", nn.ModuleList(blocks))
        self._build_tail(dims, num_heads, mlp_ratios, parallel_depth, drop_path_rate, proj_drop_rate)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _build_tail(self, dims: list[int], num_heads: int, mlp_ratios: Sequence[float], parallel_depth: int,
                    drop_path_rate: float, proj_drop_rate: float) -> None:
        """Final norm and feature levels (one per serial stage)."""
        self.norm4 = nn.LayerNorm(dims[3], eps=1e-6)
        self.num_features = self.head_hidden_size = dims[3]
        self.feature_info = [dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f"serial_blocks{i + 1}")
                             for i in range(4)]

    def _init_weights(self) -> None:
        for i in range(1, 5):
            trunc_normal_(getattr(self, f"cls_token{i}"), std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --- the serial stages -------------------------------------------------------------------
    def _serial_stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, _Size]:
        """Stage ``i`` (0-based) on an NCHW map: embed, prepend the class token, run the blocks."""
        x = getattr(self, f"patch_embed{i + 1}")(x)
        size = (x.shape[1], x.shape[2])
        x = torch.cat([getattr(self, f"cls_token{i + 1}").expand(x.shape[0], -1, -1), x.flatten(1, 2)], dim=1)
        for blk in getattr(self, f"serial_blocks{i + 1}"):
            x = self._run_block(blk, x, size)
        return x, size

    def _run_block(self, blk: nn.Module, x: torch.Tensor, size: _Size) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(blk, x, size, use_reentrant=False)
        return blk(x, size)

    def _serial(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[_Size]]:
        xs, sizes = [], []
        for i in range(4):
            t, size = self._serial_stage(i, x if i == 0 else _grid(xs[-1], sizes[-1]))
            xs.append(t)
            sizes.append(size)
        return xs, sizes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        xs, _ = self._serial(x)
        return self.norm4(xs[3])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("token", "avg", ""):
                raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool or "token"
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    # --- FeatureMixin hooks -------------------------------------------------------------------
    # The trunk state is (tokens per scale, grid sizes, scale the next level reads); each serial
    # stage appends its scale. Stage ``i`` owns patch_embed/cpe/crpe/cls_token/serial_blocks ``i+1``.
    _stem_level = False

    def _forward_stem(self, x: torch.Tensor) -> tuple[Any, None]:
        return (x, [], [], -1), None

    def _feature_stages(self) -> list[nn.Module]:
        return [m for m in (getattr(self, f"serial_blocks{i}") for i in range(1, 5)) if m is not None]

    def _run_stage(self, index: int, stage: nn.Module, state: Any) -> Any:
        img, xs, sizes, _ = state
        t, size = self._serial_stage(index, img if index == 0 else _grid(xs[-1], sizes[-1]))
        return img, xs + [t], sizes + [size], index

    def _level_output(self, state: Any, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        _, xs, sizes, cur = state
        grid = _grid(xs[cur], sizes[cur])
        return grid.contiguous() if output_fmt == "NCHW" else grid.permute(0, 2, 3, 1)

    def _final(self, state: Any) -> Any:
        return self.norm4(state[1][3])

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        for i in range(num_stages + 1, 5):
            for name in ("patch_embed", "cpe", "crpe", "serial_blocks"):
                setattr(self, f"{name}{i}", None)
            setattr(self, f"cls_token{i}", None)
        if num_stages < 4 or prune_norm:
            self.norm4 = nn.Identity()

    def _prune_head(self) -> None:
        self.norm4 = nn.Identity()
        self.reset_classifier(0)


class CoaTParallel(CoaT):
    """Full CoaT: the serial stages, then parallel blocks on scales 2-4; the three normed class
    tokens are aggregated by a 1x1 conv. ``forward_features`` returns the normed tokens of scales
    2-4 (a list)."""

    def _build_tail(self, dims: list[int], num_heads: int, mlp_ratios: Sequence[float], parallel_depth: int,
                    drop_path_rate: float, proj_drop_rate: float) -> None:
        crpes = [getattr(self, f"crpe{i}") for i in (2, 3, 4)]
        self.parallel_blocks = nn.ModuleList([ParallelBlock(dims[1], num_heads, mlp_ratios[1], crpes, drop_path_rate,
                                                            proj_drop_rate) for _ in range(parallel_depth)])
        for i in (2, 3, 4):
            setattr(self, f"norm{i}", nn.LayerNorm(dims[i - 1], eps=1e-6))
        self.aggregate = nn.Conv1d(3, 1, kernel_size=1)
        self.num_features = self.head_hidden_size = dims[3]
        self.feature_info = [dict(num_chs=dims[0], reduction=4, module="serial_blocks1")]
        self.feature_info += [dict(num_chs=dims[i], reduction=4 * 2 ** i, module="parallel_blocks") for i in (1, 2, 3)]

    def _parallel(self, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor,
                  sizes: list[_Size]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s2, s3, s4 = sizes[1], sizes[2], sizes[3]
        for blk in self.parallel_blocks:
            x2, x3, x4 = self.cpe2(x2, s2), self.cpe3(x3, s3), self.cpe4(x4, s4)
            if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
                x2, x3, x4 = torch.utils.checkpoint.checkpoint(blk, x2, x3, x4, s2, s3, s4, use_reentrant=False)
            else:
                x2, x3, x4 = blk(x2, x3, x4, s2, s3, s4)
        return x2, x3, x4

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        xs, sizes = self._serial(x)
        x2, x3, x4 = self._parallel(xs[1], xs[2], xs[3], sizes)
        return [self.norm2(x2), self.norm3(x3), self.norm4(x4)]

    def forward_head(self, x: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:  # type: ignore[override]
        if self.global_pool == "avg":
            pooled = torch.stack([t[:, 1:].mean(dim=1) for t in x], dim=1)
        else:
            pooled = torch.stack([t[:, 0] for t in x], dim=1)
        x0 = self.head_drop(self.aggregate(pooled).squeeze(1))
        return x0 if pre_logits else self.head(x0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # trunk: serial stages 1-4, the parallel blocks (level 1 reads scale 2), then two steps that
    # only move the read position to scales 3 and 4 (levels 2 and 3 share the parallel blocks)
    def _feature_stages(self) -> list[nn.Module]:
        stages = super()._feature_stages()
        if len(stages) == 4 and self.parallel_blocks is not None:
            stages += [self.parallel_blocks, nn.Identity(), nn.Identity()]
        return stages

    def _level_positions(self) -> list[int]:
        n = len(self._feature_stages())
        return [0, 4, 5, 6] if n == 7 else [0][:n]

    def _run_stage(self, index: int, stage: nn.Module, state: Any) -> Any:
        if index < 4:
            return super()._run_stage(index, stage, state)
        img, xs, sizes, _ = state
        if index == 4:
            x2, x3, x4 = self._parallel(xs[1], xs[2], xs[3], sizes)
            return img, [xs[0], x2, x3, x4], sizes, 1
        return img, xs, sizes, index - 3

    def _final(self, state: Any) -> Any:
        xs = state[1]
        return [self.norm2(xs[1]), self.norm3(xs[2]), self.norm4(xs[3])]

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        if num_stages <= 4:
            self.parallel_blocks = None
            super()._prune_to(num_stages, prune_norm)
        self.norm2, self.norm3, self.norm4 = nn.Identity(), nn.Identity(), nn.Identity()
        self.aggregate = None

    def _prune_head(self) -> None:
        self.norm2, self.norm3, self.norm4 = nn.Identity(), nn.Identity(), nn.Identity()
        self.aggregate = None
        self.reset_classifier(0)


_LITE = Variant(CoaT, embed_dims=(64, 128, 320, 512), serial_depths=(2, 2, 2, 2), mlp_ratios=(8, 8, 4, 4))
_FULL = Variant(CoaTParallel, embed_dims=(152, 152, 152, 152), serial_depths=(2, 2, 2, 2), parallel_depth=6,
                mlp_ratios=(4, 4, 4, 4))
VARIANTS: dict[str, Variant] = {
    "coat_tiny": _FULL,
    "coat_mini": _FULL.but(embed_dims=(152, 216, 216, 216)),
    "coat_small": _FULL.but(embed_dims=(152, 320, 320, 320), proj_drop_rate=0.1),
    "coat_lite_tiny": _LITE.but(embed_dims=(64, 128, 256, 320)),
    "coat_lite_mini": _LITE,
    "coat_lite_small": _LITE.but(serial_depths=(3, 4, 6, 3)),
    "coat_lite_medium": _LITE.but(embed_dims=(128, 256, 320, 512), serial_depths=(3, 6, 10, 8),
                                  mlp_ratios=(4, 4, 4, 4)),
    "coat_lite_medium_384": _LITE.but(embed_dims=(128, 256, 320, 512), serial_depths=(3, 6, 10, 8),
                                      mlp_ratios=(4, 4, 4, 4)),
}
register_family("coat", VARIANTS)
