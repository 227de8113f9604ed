"""EfficientViM: efficient vision Mamba with a hidden-state mixer based on state-space duality
(Lee et al., CVPR 2025, arXiv:2411.15241).

The token mixer (HSM-SSD) is a Mamba-2 style SSD layer whose channel mixing happens in the small
hidden state instead of on every token: per image, ``B``, ``C`` and the step ``dt`` come from a 1x1
projection + depthwise 3x3 of the tokens; the input-dependent "selection" is a softmax over the
tokens of ``dt + A`` (one row per state), so the state is ``h = x @ (softmax(dt + A) * B)^T``
(channels x states); the gated projection and output projection act on ``h`` (``N`` columns, not
``L`` tokens) and the tokens are read back with ``y = h @ C``. Blocks are four LayerScale-style
convex mixes ``(1 - a) x + a f(x)`` (``a = sigmoid(alpha)``) of a depthwise conv, the mixer, another
depthwise conv and a BN conv-FFN. Classification fuses every stage: the last hidden state of each
stage and the pooled final map each get a LayerNorm and a linear head, and the logits are a
softmax-weighted sum of the four (multi-stage hidden-state fusion). Norms are per state / per
token, then averaged. Distilled models have a second set of heads and weights (averaged).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath, drop_path_rates
from ..layers.squeeze_excite import SEModule
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .efficientvit_mit import ConvLayer

__all__ = ["EfficientViM", "HSMSSD"]


class ConvLayer1d(nn.Module):
    """Bias-free 1x1 ``Conv1d`` (kept as ``conv``) on ``[B, C, L]`` sequences."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LayerNorm1d(nn.LayerNorm):
    """LayerNorm over the channels of a ``[B, C, L]`` sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.transpose(1, 2), self.normalized_shape, self.weight, self.bias,
                            self.eps).transpose(1, 2)


class HSMSSD(nn.Module):
    """Hidden-state mixer SSD: ``h = x (softmax_L(dt + A) * B)^T``, gated mixing of ``h``,
    ``y = out_proj(h) C``. Returns the ``[B, C, H, W]`` output and the hidden state ``[B, C, N]``."""

    def __init__(self, dim: int, state_dim: int, expand: float = 1.0) -> None:
        super().__init__()
        self.state_dim, self.inner = state_dim, int(dim * expand)
        self.BCdt_proj = ConvLayer1d(dim, 3 * state_dim)
        self.dw = ConvLayer(3 * state_dim, 3 * state_dim, 3, groups=3 * state_dim, norm=False)
        self.hz_proj = ConvLayer1d(dim, 2 * self.inner)
        self.out_proj = ConvLayer1d(self.inner, dim)
        self.A = nn.Parameter(torch.empty(state_dim).uniform_(1, 16))
        self.act = nn.SiLU()
        self.D = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, h_size: int, w_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        bcdt = self.dw(self.BCdt_proj(x).reshape(b, -1, h_size, w_size)).flatten(2)
        B, C, dt = bcdt.split([self.state_dim, self.state_dim, self.state_dim], dim=1)
        sel = (dt + self.A.view(1, -1, 1)).softmax(-1) * B  # [b, N, L]
        h = x @ sel.transpose(-2, -1)  # [b, C, N]
        h, z = self.hz_proj(h).split([self.inner, self.inner], dim=1)
        h = self.out_proj(h * self.act(z) + h * self.D)
        y = h @ C  # [b, C, L]
        return y.reshape(b, -1, h_size, w_size), h


class FFN(nn.Module):
    """1x1 conv-BN-ReLU -> 1x1 conv-BN."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ConvLayer(dim, hidden, 1, act_layer=nn.ReLU)
        self.fc2 = ConvLayer(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class EfficientViMBlock(nn.Module):
    """Four convex residual mixes ``x + a (f(x) - x)`` with ``a = sigmoid(alpha[i])``: depthwise
    conv, HSM-SSD (on LayerNormed tokens), depthwise conv, FFN."""

    def __init__(self, dim: int, state_dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((4, dim), 1e-4))
        self.mixer = HSMSSD(dim, state_dim)
        self.norm = LayerNorm1d(dim)
        self.dwconv1 = ConvLayer(dim, dim, 3, groups=dim)
        self.dwconv2 = ConvLayer(dim, dim, 3, groups=dim)
        self.ffn = FFN(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _mix(self, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (1 - a) * x + a * y

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.sigmoid(self.alpha).view(4, -1, 1, 1)
        x = self._mix(x, self.dwconv1(x), alpha[0])
        y, h = self.mixer(self.norm(x.flatten(2)), x.shape[2], x.shape[3])
        x = self._mix(x, y, alpha[1])
        x = self._mix(x, self.dwconv2(x), alpha[2])
        x = self._mix(x, self.drop_path(self.ffn(x)), alpha[3])
        return x, h


class PatchMerging(nn.Module):
    """Downsampling: residual dw 3x3, inverted bottleneck (1x1, dw 3x3 stride 2, SE, 1x1), residual
    dw 3x3."""

    def __init__(self, in_dim: int, out_dim: int, ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(out_dim * ratio)
        self.conv = nn.Sequential(
            ConvLayer(in_dim, hidden, 1, act_layer=nn.ReLU),
            ConvLayer(hidden, hidden, 3, 2, groups=hidden, act_layer=nn.ReLU),
            SEModule(hidden, rd_ratio=0.25, rd_divisor=1),
            ConvLayer(hidden, out_dim, 1))
        self.dwconv1 = ConvLayer(in_dim, in_dim, 3, groups=in_dim)
        self.dwconv2 = ConvLayer(out_dim, out_dim, 3, groups=out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dwconv1(x)
        x = self.conv(x)
        return x + self.dwconv2(x)


class EfficientViMStage(nn.Module):
    """Blocks at one resolution, then (all but the last stage) a ``downsample``.

    The trunk carries ``(next input, stage map, pooled features so far)``: the feature level is the
    map before downsampling and the head needs every stage's last hidden state.
    """

    def __init__(self, dim: int, out_dim: Optional[int], depth: int, state_dim: int, mlp_ratio: float,
                 dpr: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList([EfficientViMBlock(dim, state_dim, mlp_ratio, dpr[i]) for i in range(depth)])
        self.downsample = PatchMerging(dim, out_dim) if out_dim is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = x.new_zeros(1)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
                x, h = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x, h = blk(x)
        return self.downsample(x), x, h


class EfficientViM(FeatureMixin, ModelForwardMixin, nn.Module):
    """Stem (four stride-2 convs), three HSM-SSD stages, multi-stage hidden-state fusion head.

    ``forward_features`` returns the four normalised pooled vectors (three last hidden states and
    the pooled final map) concatenated (``num_features`` wide); ``forward_head`` applies one linear
    head per part and sums them with softmax(``weights``).
    """

    feature_cfg = {"feature_cls": "getter"}
    _stem_level = False

    def __init__(self, *, embed_dim: Sequence[int] = (128, 192, 320), depths: Sequence[int] = (2, 2, 2),
                 state_dim: Sequence[int] = (49, 25, 9), mlp_ratio: float = 4.0, distillation: bool = False,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        assert global_pool in ("avg", "")
        self.num_classes, self.grad_checkpointing, self.global_pool = num_classes, False, global_pool
        self.drop_rate, self.distillation = drop_rate, distillation
        self.weights = nn.Parameter(torch.ones(4))
        if distillation:
            self.weights_dist = nn.Parameter(torch.ones(4))
        dims = list(embed_dim)
        self.patch_embed = nn.Module()
        self.patch_embed.conv = nn.Sequential(
            ConvLayer(in_chans, dims[0] // 8, 3, 2, act_layer=nn.ReLU),
            ConvLayer(dims[0] // 8, dims[0] // 4, 3, 2, act_layer=nn.ReLU),
            ConvLayer(dims[0] // 4, dims[0] // 2, 3, 2, act_layer=nn.ReLU),
            ConvLayer(dims[0] // 2, dims[0], 3, 2))
        dpr = drop_path_rates(drop_path_rate, list(depths))
        n = len(dims)
        self.stages = nn.ModuleList([  # stages hand on tuples: not a Sequential
            EfficientViMStage(dims[i], dims[i + 1] if i < n - 1 else None, depths[i], state_dim[i], mlp_ratio, dpr[i])
            for i in range(n)])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 4), module=f"stages.{i}") for i in range(n)]
        self.head_dims = dims + [dims[-1]]
        self.num_features = self.head_hidden_size = sum(self.head_dims)
        self.norm = nn.ModuleList([nn.LayerNorm(d) for d in self.head_dims])
        self.heads = self._make_heads(num_classes)
        self.heads_dist = self._make_heads(num_classes) if distillation else None

    def _make_heads(self, num_classes: int) -> nn.ModuleList:
        return nn.ModuleList([nn.Linear(d, num_classes) if num_classes > 0 else nn.Identity()
                              for d in self.head_dims])

    def get_classifier(self) -> nn.Module:
        return self.heads

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            assert global_pool in ("avg", "")
            self.global_pool = global_pool
        self.heads = self._make_heads(num_classes)
        if self.distillation:
            self.heads_dist = self._make_heads(num_classes)

    # trunk state: (next stage input, last stage map, pooled hidden-state features so far)
    def _forward_stem(self, x: torch.Tensor) -> Tuple[Tuple[torch.Tensor, torch.Tensor, torch.Tensor], Optional[torch.Tensor]]:
        x = self.patch_embed.conv(x)
        return (x, x, x.new_zeros(x.shape[0], 0)), None

    def _pool_tokens(self, index: int, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Append ``norm[index]`` of ``[B, L, C]`` tokens, averaged, to ``pooled`` (the norms go with the
        head: after pruning for ``features_only`` nothing is appended)."""
        for i, norm in enumerate(self.norm):
            if i == index:
                pooled = torch.cat([pooled, norm(tokens).mean(1)], dim=1)
        return pooled

    def _run_stage(self, index: int, stage: nn.Module,
                   state: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, _, pooled = state
        x, x_map, h = stage(x)
        return x, x_map, self._pool_tokens(index, h.transpose(1, 2), pooled)

    def _level_output(self, x, is_last: bool, norm: bool, output_fmt: str, in_size: tuple[int, int]):
        return x[1]

    def _final(self, x: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        _, x_map, pooled = x
        return self._pool_tokens(len(self.head_dims) - 1, x_map.flatten(2).transpose(1, 2), pooled)

    def _prune_head(self) -> None:
        self.reset_classifier(0, "")
        self.norm = nn.ModuleList()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        (x, x_map, pooled), _ = self._forward_stem(x)
        for i, stage in enumerate(self.stages):  # _run_stage inlined (TorchScript takes no module arguments)
            x, x_map, h = stage(x)
            pooled = self._pool_tokens(i, h.transpose(1, 2), pooled)
        return self._final((x, x_map, pooled))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.dropout(x, self.drop_rate, self.training)
        if pre_logits or self.num_classes == 0:
            return x
        parts = x.split(self.head_dims, dim=1)
        w = self.weights.softmax(-1)
        y = x.new_zeros(1)
        for i, head in enumerate(self.heads):
            y = y + w[i] * head(parts[i])
        if self.heads_dist is not None:
            w = self.weights_dist.softmax(-1)
            y_dist = x.new_zeros(1)
            for i, head in enumerate(self.heads_dist):
                y_dist = y_dist + w[i] * head(parts[i])
            y = (y + y_dist) / 2
        return y


_m1 = Variant(EfficientViM, embed_dim=(128, 192, 320), depths=(2, 2, 2), state_dim=(49, 25, 9))
_m2 = _m1.but(embed_dim=(128, 256, 512))
_m3 = _m1.but(embed_dim=(224, 320, 512))
_m4 = _m3.but(depths=(3, 4, 2), state_dim=(64, 32, 16))
VARIANTS: dict[str, Variant] = {}
for _name, _v in (("m1", _m1), ("m2", _m2), ("m3", _m3), ("m4", _m4)):
    VARIANTS[f"efficientvim_{_name}"] = _v
    VARIANTS[f"efficientvim_{_name}_dist"] = _v.but(distillation=True)
register_family("efficientvim", VARIANTS)
