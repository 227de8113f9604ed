"""InceptionNeXt ("InceptionNeXt: When Inception Meets ConvNeXt", Yu et al. 2024).

A MetaNeXt body (ConvNeXt-like four-stage layout with a 4x4 patch stem and 2x2 downsampling) whose
token mixer is an Inception depthwise conv: the channels are split into an identity group and
three small groups mixed by a square kxk, a 1xK and a Kx1 depthwise conv. Each block is
``x + gamma * mlp(bn(mixer(x)))``; the head is an MLP (fc -> GELU -> LayerNorm -> fc).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.activations import get_act_layer
from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.mlp import Mlp
from ..layers.pool import SelectAdaptivePool2d
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["MetaNeXt", "InceptionDWConv2d"]


class InceptionDWConv2d(nn.Module):
    """Identity / square / horizontal band / vertical band depthwise branches over channel groups."""

    def __init__(self, dim: int, square_kernel: int = 3, band_kernel: int = 11, branch_ratio: float = 0.125) -> None:
        super().__init__()
        g = int(dim * branch_ratio)
        self.dwconv_hw = nn.Conv2d(g, g, square_kernel, padding=square_kernel // 2, groups=g)
        self.dwconv_w = nn.Conv2d(g, g, (1, band_kernel), padding=(0, band_kernel // 2), groups=g)
        self.dwconv_h = nn.Conv2d(g, g, (band_kernel, 1), padding=(band_kernel // 2, 0), groups=g)
        self.split_sizes = (dim - 3 * g, g, g, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_sizes, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)


class MetaNeXtBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0, band_kernel: int = 11, branch_ratio: float = 0.125,
                 ls_init_value: float = 1e-6, act_layer=nn.GELU, drop_path: float = 0.0) -> None:
        super().__init__()
        self.token_mixer = InceptionDWConv2d(dim, band_kernel=band_kernel, branch_ratio=branch_ratio)
        self.norm = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=act_layer, use_conv=True)
        self.gamma = nn.Parameter(torch.full((dim,), ls_init_value)) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.token_mixer(x)))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class MetaNeXtStage(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, depth: int, dp_rates, **block_kw) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = nn.Sequential(nn.BatchNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, stride, stride=stride)) \
            if stride > 1 else nn.Identity()
        self.blocks = nn.Sequential(*[MetaNeXtBlock(out_chs, drop_path=dp_rates[i], **block_kw) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class MlpClassifierHead(nn.Module):
    """Pool -> fc1 -> act -> LayerNorm -> dropout -> fc2 (``pre_logits`` stops before fc2)."""

    def __init__(self, in_features: int, num_classes: int, hidden_size: int, pool_type: str = "avg",
                 act_layer=nn.GELU, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        self.fc1 = nn.Linear(in_features, hidden_size)
        self.act = act_layer()
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    @property
    def fc(self) -> nn.Module:
        return self.fc2

    def reset(self, num_classes: int, pool_type: str | None = None) -> None:
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type, flatten=True)
        self.fc2 = nn.Linear(self.hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if x.ndim == 4:  # unpooled map: the MLP acts per position
            x = x.permute(0, 2, 3, 1)
            x = self.drop(self.norm(self.act(self.fc1(x))))
            return (x if pre_logits else self.fc2(x)).permute(0, 3, 1, 2)
        x = self.drop(self.norm(self.act(self.fc1(x))))
        return x if pre_logits else self.fc2(x)


class MetaNeXt(FeatureMixin, ModelForwardMixin, nn.Module):
    """Four MetaNeXt stages (strides 4, 8, 16, 32) and an MLP head."""

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True}
    _stem_level = False

    def __init__(self, *, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 3),
                 band_kernel: int = 11, branch_ratio: float = 0.125, head_mlp_ratio: float = 3.0, ls_init_value: float = 1e-6,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, act_layer="gelu") -> None:
        super().__init__()
        act = get_act_layer(act_layer)
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), nn.BatchNorm2d(dims[0]))
        dpr = drop_path_rates(drop_path_rate, list(depths))
        self.stages = nn.Sequential(*[
            MetaNeXtStage(dims[max(i - 1, 0)], dims[i], 1 if i == 0 else 2, depths[i], dpr[i],
                          mlp_ratio=mlp_ratios[i], band_kernel=band_kernel, branch_ratio=branch_ratio,
                          ls_init_value=ls_init_value,
                          act_layer=act)
            for i in range(len(depths))])
        self.feature_info = [dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}")
                             for i in range(len(depths))]
        self.num_features = dims[-1]
        self.head_hidden_size = int(head_mlp_ratio * dims[-1])
        self.head = MlpClassifierHead(dims[-1], num_classes, self.head_hidden_size, pool_type=global_pool,
                                      act_layer=act, drop_rate=drop_rate)

    def get_classifier(self) -> nn.Module:
        return self.head.fc2

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    # FeatureMixin hooks




_tiny = Variant(MetaNeXt, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
VARIANTS: dict[str, Variant] = {
    "inception_next_atto": _tiny.but(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), band_kernel=9, branch_ratio=0.25),
    "inception_next_tiny": _tiny,
    "inception_next_small": _tiny.but(depths=(3, 3, 27, 3)),
    "inception_next_base": _tiny.but(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}
register_family("inception_next", VARIANTS)
