"""DeepSeek vision tower: a RoPE ViT (RMSNorm, packed SwiGLU without biases) plus an aligner MLP
that merges 3x3 token neighbourhoods into the language model's width.

Reference: the DeepSeek-V4 vision encoder released with https://huggingface.co/deepseek-ai/DeepSeek-V4.1-Flash
(weights re-published as ``timm/deepseek_vit_412m*``). The conformance fixtures for these
checkpoints are structure-only (over 200M parameters), so the layout follows them exactly while
the block is the EVA-style one shared with :mod:`visionzoo.models.eva` (axial RoPE, fused qkv with
bias, RMSNorm pre-norm).

Three layouts of the same network:
    * ``deepseek_vit_412m_enc``: the encoder at top level with its ``aligner``;
    * ``deepseek_vit_412m``: the encoder under ``encoder.`` and a classifier ``head``;
    * ``deepseek_vit_412m_align``: as above, with the aligner output (width 5120) as features.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.mlp import GluMlp, Mlp
from .base import FeatureMixin, Variant, register_family
from .eva import Eva

__all__ = ["DeepSeekEncoder", "DeepSeekVit", "VARIANTS"]


class DeepSeekEncoder(Eva):
    """:class:`~visionzoo.models.eva.Eva` configured as DeepSeek's encoder (no class token or absolute
    position embedding, axial RoPE, RMSNorm, bias-free packed SwiGLU) plus the token ``aligner``.

    ``merge``: side of the token neighbourhood the aligner concatenates (``merge**2 * embed_dim``
    inputs); ``aligner_dim``: its width (0: no aligner).
    """

    def __init__(self, *, embed_dim: int = 1024, mlp_hidden: int = 2816, merge: int = 3, aligner_dim: int = 5120,
                 num_classes: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("img_size", 546)
        kwargs.setdefault("patch_size", 14)
        kwargs.setdefault("depth", 32)
        kwargs.setdefault("num_heads", 16)
        kwargs.setdefault("dynamic_img_size", True)  # any multiple of the patch size (min 126 px)
        super().__init__(embed_dim=embed_dim, mlp_hidden=mlp_hidden, mlp_type="glu", qkv_mode="fused_bias",
                         class_token=False, use_abs_pos_emb=False, norm_layer=kwargs.pop("norm_layer", "rmsnorm"),
                         norm_eps=kwargs.pop("norm_eps", 1e-6), rope_type="axial", fc_norm=False,
                         num_classes=num_classes, **kwargs)
        for blk in self.blocks:  # the published MLPs have no biases (same names, same place)
            blk.mlp = GluMlp(embed_dim, 2 * mlp_hidden, act_layer="silu", bias=False, gate_last=False)
        self.merge = merge
        if aligner_dim:
            self.aligner: Optional[nn.Module] = Mlp(embed_dim * merge * merge, aligner_dim, aligner_dim,
                                                    act_layer="gelu")
        else:
            self.aligner = None
        self.aligned_dim = aligner_dim or embed_dim

    def merge_tokens(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``[B, H*W, C]`` -> ``[B, (H/m)*(W/m), m*m*C]``: each ``m x m`` neighbourhood (row-major)
        becomes one token; the grid is zero-padded to a multiple of ``m``."""
        b, _, c = x.shape
        m = self.merge
        h, w = grid
        x = x.reshape(b, h, w, c)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hh, ww = (h + ph) // m, (w + pw) // m
        x = x.reshape(b, hh, m, ww, m, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, hh * ww, m * m * c)

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder tokens merged and projected by the aligner (the language model's visual tokens)."""
        patch = self.patch_embed.patch_size
        grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])
        x = self.forward_features(x)
        aligner = self.aligner
        if aligner is None:
            return x
        return aligner(self.merge_tokens(x, grid))


class DeepSeekVit(FeatureMixin, nn.Module):
    """The encoder under ``encoder.`` with a pooled linear ``head``; ``use_aligner`` makes the
    aligner's merged tokens the features (``num_features`` = its width)."""

    feature_cfg = {"feature_cls": "getter", "flatten_sequential": False}
    _stem_level = False
    _output_fmts = ("NCHW", "NLC")
    _final_after_stop_early = True

    def __init__(self, *, num_classes: int = 0, global_pool: str = "avg", use_aligner: bool = False,
                 drop_rate: float = 0.0, **kwargs: Any) -> None:
        super().__init__()
        if global_pool not in ("avg", "max", ""):
            raise ValueError(f"global_pool must be 'avg', 'max' or '', got {global_pool!r}")
        self.encoder = DeepSeekEncoder(aligner_dim=kwargs.pop("aligner_dim", 5120) if use_aligner else 0, **kwargs)
        self.use_aligner = use_aligner
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.grad_checkpointing = False
        self.num_features = self.head_hidden_size = self.encoder.aligned_dim
        self.feature_info = [dict(info, module=f"encoder.{info['module']}") for info in self.encoder.feature_info]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_aligned(x) if self.use_aligner else self.encoder.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        elif self.global_pool == "max":
            x = x.amax(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- FeatureMixin hooks: the encoder's blocks (its own hooks do the work) ---------------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        patch = self.encoder.patch_embed.patch_size
        self._grid = (x.shape[-2] // patch[0], x.shape[-1] // patch[1])  # for the aligner in _final
        return self.encoder._forward_stem(x)

    def _feature_stages(self) -> list[nn.Module]:
        return self.encoder._feature_stages()

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.encoder._run_stage(index, stage, x)

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, then (aligned layout) the merged, aligned tokens: what forward_features gives."""
        x = self.encoder._final(x)
        aligner = self.encoder.aligner
        if self.use_aligner and aligner is not None:
            x = aligner(self.encoder.merge_tokens(x, self._grid))
        return x

    def _level_output(self, x: torch.Tensor, is_last: bool, norm: bool, output_fmt: str,
                      in_size: tuple[int, int]) -> torch.Tensor:
        return self.encoder._level_output(x, is_last, norm, output_fmt, in_size)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        self.encoder._prune_to(num_stages, prune_norm)

    def _prune_head(self) -> None:
        self.encoder.aligner = None
        self.use_aligner = False
        self.reset_classifier(0, "")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.encoder.set_grad_checkpointing(enable)


VARIANTS: dict[str, Variant] = {
    "deepseek_vit_412m": Variant(DeepSeekVit),
    "deepseek_vit_412m_align": Variant(DeepSeekVit, use_aligner=True),
    "deepseek_vit_412m_enc": Variant(DeepSeekEncoder),
}

register_family("deepseek_vit", VARIANTS)
