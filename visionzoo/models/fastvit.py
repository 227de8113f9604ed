"""FastViT: a fast hybrid vision transformer using structural reparameterization
(Vasu et al., ICCV 2023, arXiv:2303.14189), and the MobileCLIP / MobileCLIP2 image towers built on it
(``fastvit_mci*``, arXiv:2311.17049).

Every conv unit is trained over-parameterised and folds for inference:

* the stem is three MobileOne blocks (``kxk+BN`` branches, a ``1x1+BN`` scale branch and an
  identity BN; byobnet's :class:`~visionzoo.models.byobnet.MobileOneBlock`);
* *RepMixer* token mixing ``x + gamma * (mixer(x) - norm(x))`` with depthwise MobileOne branches
  folds to one depthwise 3x3 conv (the skip disappears);
* downsampling is a train-time "large kernel" conv (7x7 and 3x3 depthwise branches, optionally
  SE) then a 1x1 MobileOne block;
* *RepCPE* conditional position encodings ``x + dwconv7x7(x)`` fold to one conv;
* the last stages of ``sa``/``ma``/``mci`` models use multi-head self-attention blocks.

``reparameterize()`` folds every block in place; ``visionzoo.optimize`` calls it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..layers.attention import Attention
from ..layers.conv_norm_act import ConvNormAct
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.norm import LayerNorm2d
from ..layers.pool import ClassifierHead
from ..layers.squeeze_excite import SEModule
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family
from .byobnet import LayerEnv, MobileOneBlock, NetSpec, _fold_conv_bn, _identity_kernel, _pad_to

__all__ = ["FastVit", "RepMixer", "RepCPE", "ReparamLargeKernelConv"]

_GELU_ENV = LayerEnv(NetSpec(blocks=(), act="gelu"), None, None)
_LINEAR_ENV = LayerEnv(NetSpec(blocks=(), act="identity"), None, None)


def _mobileone(in_chs: int, out_chs: int, k: int, stride: int = 1, depthwise: bool = False, act: bool = True,
               scale_branch: bool = True, num_branches: int = 1) -> MobileOneBlock:
    """byobnet's MobileOne block, GELU (or linear), optionally without the ``1x1`` scale branch."""
    block = MobileOneBlock(in_chs, out_chs, env=_GELU_ENV if act else _LINEAR_ENV, kernel_size=k, stride=stride,
                           group_size=1 if depthwise else 0, num_branches=num_branches)
    if not scale_branch:
        block.conv_scale = None
    return block


def _dw_conv(weight: torch.Tensor, bias: torch.Tensor, groups: int, stride: int = 1) -> nn.Conv2d:
    """A grouped conv with bias holding ``weight`` / ``bias`` (for folded blocks)."""
    out_chs, per_group, k = weight.shape[0], weight.shape[1], weight.shape[-1]
    conv = nn.Conv2d(per_group * groups, out_chs, k, stride=stride, padding=k // 2, groups=groups, bias=True,
                     device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


class _IdentityBranch(MobileOneBlock):
    """A MobileOne block reduced to its identity BN (RepMixer's ``norm``); its owner folds it."""

    def reparameterize(self) -> None:
        return None


class SEMobileOneBlock(MobileOneBlock):
    """MobileOne block with squeeze-excite before the GELU (FastViT's ``final_conv``); ``se`` comes
    first in the checkpoint layout."""

    def __init__(self, in_chs: int, out_chs: int, k: int = 3, depthwise: bool = True) -> None:
        super().__init__(in_chs, out_chs, env=_LINEAR_ENV, kernel_size=k, group_size=1 if depthwise else 0)
        se = SEModule(out_chs, rd_ratio=1 / 16, rd_divisor=1)
        self._modules = {"se": se, **self._modules}
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the parent's branch sum, spelled out so that TorchScript compiles it (no super() there)
        if self.reparam_conv is not None:
            return self.gelu(self.se(self.reparam_conv(x)))
        y = self.conv_scale(x) if self.conv_scale is not None else torch.zeros_like(x[:, :1])
        for conv in self.conv_kxk:
            y = y + conv(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.gelu(self.se(y))


class ReparamLargeKernelConv(nn.Module):
    """Grouped ``7x7+BN`` and ``3x3+BN`` branches summed, optional SE and activation; the small
    branch folds into the large one."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 7, small_kernel: int = 3, stride: int = 2,
                 use_se: bool = False, act: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.large_conv = ConvNormAct(in_chs, out_chs, kernel_size, stride=stride, groups=in_chs, apply_act=False)
        self.small_conv = ConvNormAct(in_chs, out_chs, small_kernel, stride=stride, groups=in_chs, apply_act=False)
        self.se = SEModule(out_chs, rd_ratio=0.25, rd_divisor=1) if use_se else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()
        self.reparam_conv: Optional[nn.Conv2d] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            y = self.reparam_conv(x)
        else:
            y = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(y))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        k = self.large_conv.conv.kernel_size[0]
        w1, b1 = _fold_conv_bn(self.large_conv.conv.weight, self.large_conv.bn)
        w2, b2 = _fold_conv_bn(self.small_conv.conv.weight, self.small_conv.bn)
        self.reparam_conv = _dw_conv(w1 + _pad_to(w2, k), b1 + b2, self.large_conv.conv.groups, self.stride)
        del self.large_conv, self.small_conv


class LayerScale2d(nn.Module):
    """Per-channel scale ``gamma`` of shape ``[C, 1, 1]`` (the checkpoint layout)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """``x + gamma * (mixer(x) - norm(x))``: ``mixer`` a depthwise MobileOne block, ``norm`` its
    identity-BN branch alone; folds to one depthwise conv."""

    def __init__(self, dim: int, kernel_size: int = 3, layer_scale_init: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.norm = _IdentityBranch(dim, dim, env=_LINEAR_ENV, kernel_size=kernel_size, group_size=1, num_branches=0)
        self.norm.conv_scale = None
        self.mixer = _mobileone(dim, dim, kernel_size, depthwise=True, act=False)
        self.layer_scale = LayerScale2d(dim, layer_scale_init)
        self.reparam_conv: Optional[nn.Conv2d] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        if self.mixer.reparam_conv is not None:  # already folded (deepest-first order)
            wm, bm = self.mixer.reparam_conv.weight, self.mixer.reparam_conv.bias
        else:
            wm, bm = self.mixer._fused_kernel_bias()
        ref = self.layer_scale.gamma
        wn, bn = _fold_conv_bn(_identity_kernel(self.dim, self.dim, self.kernel_size, ref), self.norm.identity)
        gamma = self.layer_scale.gamma.reshape(-1)
        w = _identity_kernel(self.dim, self.dim, self.kernel_size, ref) + gamma.reshape(-1, 1, 1, 1) * (wm - wn)
        self.reparam_conv = _dw_conv(w, gamma * (bm - bn), self.dim)
        del self.norm, self.mixer, self.layer_scale


class RepCPE(nn.Module):
    """Conditional position encoding ``x + dwconv(x)`` (with bias); folds to one conv."""

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.dim = dim
        self.pos_enc = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=True)
        self.reparam_conv: Optional[nn.Conv2d] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.pos_enc(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.reparam_conv is not None:
            return
        w = self.pos_enc.weight
        self.reparam_conv = _dw_conv(w + _identity_kernel(self.dim, self.dim, w.shape[-1], w), self.pos_enc.bias, self.dim)
        del self.pos_enc


class ConvMlp(nn.Module):
    """Depthwise ``7x7+BN`` then a 1x1-conv MLP."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.conv = ConvNormAct(dim, dim, 7, groups=dim, apply_act=False)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(self.conv(x))))))


class RepMixerBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, ls_init: float = 1e-5) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, layer_scale_init=ls_init)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale = LayerScale2d(dim, ls_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class AttentionMixer(Attention):
    """Multi-head self-attention over the pixels of an NCHW map (head dim 32)."""

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.attend(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, c, h, w)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0, ls_init: float = 1e-5,
                 norm: str = "batchnorm") -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim) if norm == "batchnorm" else LayerNorm2d(dim, eps=1e-5)
        self.token_mixer = AttentionMixer(dim, num_heads=dim // 32)
        self.layer_scale_1 = LayerScale2d(dim, ls_init)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = LayerScale2d(dim, ls_init)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.layer_scale_1(self.token_mixer(self.norm(x))))
        return x + self.drop_path2(self.layer_scale_2(self.mlp(x)))


class PatchEmbed(nn.Module):
    """Stride-2 downsampling: large-kernel grouped conv then a 1x1 MobileOne block (``proj``)."""

    def __init__(self, in_chs: int, out_chs: int, use_se: bool, lkc_act: bool) -> None:
        super().__init__()
        self.proj = nn.Sequential(ReparamLargeKernelConv(in_chs, out_chs, use_se=use_se, act=lkc_act),
                                  _mobileone(out_chs, out_chs, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class FastVitStage(nn.Module):
    def __init__(self, in_chs: int, dim: int, depth: int, mixer: str, mlp_ratio: float, downsample: bool,
                 pos_emb: bool, use_se: bool, lkc_act: bool, attn_norm: str, dpr: Sequence[float]) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = PatchEmbed(in_chs, dim, use_se, lkc_act) if downsample else nn.Identity()
        self.pos_emb = RepCPE(dim) if pos_emb else nn.Identity()
        if mixer == "attention":
            blocks = [AttentionBlock(dim, mlp_ratio, dpr[i], norm=attn_norm) for i in range(depth)]
        else:
            blocks = [RepMixerBlock(dim, mlp_ratio, dpr[i]) for i in range(depth)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_emb(self.downsample(x))
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class FastVit(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """MobileOne stem (stride 4), four or five stages (RepMixer, then attention), an SE MobileOne
    ``final_conv`` doubling the width, pooled linear head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, layers: Sequence[int] = (2, 2, 6, 2), embed_dims: Sequence[int] = (48, 96, 192, 384),
                 mlp_ratios: float = 3.0, token_mixers: Sequence[str] = ("repmixer",) * 4,
                 pos_embs: Sequence[bool] = (False,) * 4, se_downsamples: Sequence[bool] = (False,) * 4,
                 lkc_use_act: bool = False, stem_scale_branch: bool = True, attn_norm: str = "batchnorm",
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.grad_checkpointing = num_classes, False
        d0 = embed_dims[0]
        self.stem = nn.Sequential(
            _mobileone(in_chans, d0, 3, 2, scale_branch=stem_scale_branch),
            _mobileone(d0, d0, 3, 2, depthwise=True, scale_branch=stem_scale_branch),
            _mobileone(d0, d0, 1))
        dpr = drop_path_rates(drop_path_rate, list(layers))
        stages, self.feature_info = [], []
        prev = d0
        for i, (depth, dim) in enumerate(zip(layers, embed_dims)):
            stages.append(FastVitStage(prev, dim, depth, token_mixers[i], mlp_ratios, i > 0, pos_embs[i],
                                       se_downsamples[i], lkc_use_act, attn_norm, dpr[i]))
            self.feature_info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f"stages.{i}"))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev * 2
        self.final_conv = SEMobileOneBlock(prev, self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.stages = self.stages[:num_stages]
        self.final_conv = nn.Identity()

    @torch.no_grad()
    def reparameterize(self) -> "FastVit":
        """Fold every re-parameterisable block (MobileOne, RepMixer, large-kernel convs, RepCPE)."""
        for m in reversed(list(self.modules())):  # deepest first, as visionzoo.optimize does
            if m is not self and callable(getattr(m, "reparameterize", None)):
                m.reparameterize()
        return self


_rm = ("repmixer",) * 4
_sa = ("repmixer", "repmixer", "repmixer", "attention")
_cpe = (False, False, False, True)
_t = Variant(FastVit, layers=(2, 2, 4, 2), embed_dims=(48, 96, 192, 384), mlp_ratios=3.0)
_s = _t.but(layers=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=4.0)
_mci = _t.but(layers=(2, 6, 10, 2), embed_dims=(64, 128, 256, 512), mlp_ratios=3.0, token_mixers=_sa, pos_embs=_cpe,
              se_downsamples=(False, False, True, True), lkc_use_act=True)
_mci2 = Variant(FastVit, layers=(2, 12, 24, 4, 2), embed_dims=(96, 192, 384, 768, 1536), mlp_ratios=4.0,
                token_mixers=("repmixer",) * 3 + ("attention",) * 2, pos_embs=(False,) * 3 + (True,) * 2,
                se_downsamples=(False,) * 5, lkc_use_act=True, stem_scale_branch=False, attn_norm="layernorm2d")
VARIANTS: dict[str, Variant] = {
    "fastvit_t8": _t,
    "fastvit_t12": _t.but(layers=(2, 2, 6, 2), embed_dims=(64, 128, 256, 512)),
    "fastvit_s12": _s,
    "fastvit_sa12": _s.but(token_mixers=_sa, pos_embs=_cpe),
    "fastvit_sa24": _s.but(layers=(4, 4, 12, 4), token_mixers=_sa, pos_embs=_cpe),
    "fastvit_sa36": _s.but(layers=(6, 6, 18, 6), token_mixers=_sa, pos_embs=_cpe),
    "fastvit_ma36": _s.but(layers=(6, 6, 18, 6), embed_dims=(76, 152, 304, 608), token_mixers=_sa, pos_embs=_cpe),
    "fastvit_mci0": _mci,
    "fastvit_mci1": _mci.but(layers=(4, 12, 20, 4)),
    "fastvit_mci2": _mci.but(layers=(4, 12, 24, 4), embed_dims=(80, 160, 320, 640)),
    "fastvit_mci3": _mci2,
    "fastvit_mci4": _mci2.but(layers=(2, 12, 24, 4, 4), embed_dims=(128, 256, 512, 1024, 2048)),
}
register_family("fastvit", VARIANTS)
