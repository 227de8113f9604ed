"""ResNet and its descendants, in the layout of the published torchvision/timm checkpoints.

Covers the original ResNet (He et al., 2016), ResNeXt grouped bottlenecks (Xie et al., 2017),
Wide ResNets (Zagoruyko & Komodakis, 2016), the "bag of tricks" stems and shortcuts
(He et al., 2019: ``c`` deep stem, ``d`` deep stem + average-pool shortcut, ``s`` wide deep stem,
``t`` tiered deep stem), Squeeze-and-Excitation / SENet-154 (Hu et al., 2018), ECA (Wang et al.,
2020), anti-aliased downsampling (Zhang, 2019) and ResNet-RS (Bello et al., 2021).

Every architecture is one row of ``VARIANTS``; one ``ResNet`` class builds them all.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.activations import LayerType, get_act_layer
from ..layers.blur_pool import create_aa
from ..layers.drop import DropBlock2d, DropPath
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.norm import get_norm_layer
from ..layers.padding import get_padding
from ..layers.pool import create_classifier
from ..layers.squeeze_excite import get_attn
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "VARIANTS"]


def _make_attn(attn_layer: Callable[..., nn.Module] | None, channels: int) -> nn.Module | None:
    return attn_layer(channels) if attn_layer is not None else None


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity/projection shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        attn_layer: Callable[..., nn.Module] | None = None,
        aa_layer: LayerType = None,
        drop_block: nn.Module | None = None,
        drop_path: float = 0.0,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only cardinality=1 and base_width=64")
        first_planes = planes // reduce_first
        outplanes = planes * self.expansion
        if widths is not None:
            first_planes, outplanes = widths[0], widths[-1]
        first_dilation = first_dilation or dilation
        use_aa = aa_layer is not None and stride == 2

        self.conv1 = nn.Conv2d(inplanes, first_planes, 3, stride=1 if use_aa else stride, padding=first_dilation,
                               dilation=first_dilation, bias=False)
        self.bn1 = norm_layer(first_planes)
        self.drop_block = drop_block if drop_block is not None else nn.Identity()
        self.act1 = act_layer(inplace=True)
        self.aa = create_aa(aa_layer, first_planes, stride) if use_aa else nn.Identity()
        self.conv2 = nn.Conv2d(first_planes, outplanes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(outplanes)
        self.se = _make_attn(attn_layer, planes * self.expansion)
        self.act2 = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        if getattr(self.bn2, "weight", None) is not None:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.drop_block(self.bn2(self.conv2(x)))
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act2(x + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (grouped for ResNeXt) -> 1x1 expand (x4), stride on the 3x3 (ResNet v1.5)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        cardinality: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        dilation: int = 1,
        first_dilation: int | None = None,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        attn_layer: Callable[..., nn.Module] | None = None,
        aa_layer: LayerType = None,
        drop_block: nn.Module | None = None,
        drop_path: float = 0.0,
        widths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64)) * cardinality
        first_planes = width // reduce_first
        outplanes = planes * self.expansion
        if widths is not None:  # channel-pruned checkpoints: explicit (conv1, conv2, conv3) widths
            first_planes, width, outplanes = widths
        first_dilation = first_dilation or dilation
        use_aa = aa_layer is not None and stride == 2

        self.conv1 = nn.Conv2d(inplanes, first_planes, 1, bias=False)
        self.bn1 = norm_layer(first_planes)
        self.act1 = act_layer(inplace=True)
        self.conv2 = nn.Conv2d(first_planes, width, 3, stride=1 if use_aa else stride, padding=first_dilation,
                               dilation=first_dilation, groups=cardinality, bias=False)
        self.bn2 = norm_layer(width)
        self.drop_block = drop_block if drop_block is not None else nn.Identity()
        self.act2 = act_layer(inplace=True)
        self.aa = create_aa(aa_layer, width, stride) if use_aa else nn.Identity()
        self.conv3 = nn.Conv2d(width, outplanes, 1, bias=False)
        self.bn3 = norm_layer(outplanes)
        # attention sized by the nominal width (pruned checkpoints keep the unpruned ECA kernel)
        self.se = _make_attn(attn_layer, planes * self.expansion)
        self.act3 = act_layer(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        if getattr(self.bn3, "weight", None) is not None:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def downsample_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                    first_dilation: int | None = None, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d
                    ) -> nn.Module:
    """Projection shortcut: strided conv (1x1, or k x k for SENet-154) + norm."""
    kernel_size = 1 if stride == 1 and dilation == 1 else kernel_size
    first_dilation = (first_dilation or dilation) if kernel_size > 1 else 1
    pad = get_padding(kernel_size, stride, first_dilation)
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=pad, dilation=first_dilation, bias=False),
        norm_layer(out_chs),
    )


def downsample_avg(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                   first_dilation: int | None = None, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d
                   ) -> nn.Module:
    """ResNet-D shortcut: 2x2 average pool, then 1x1 conv, so no activations are skipped over."""
    if stride == 1:
        pool: nn.Module = nn.Identity()
    else:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
    return nn.Sequential(pool, nn.Conv2d(in_chs, out_chs, 1, stride=1, bias=False), norm_layer(out_chs))


def _drop_blocks(drop_block_rate: float) -> list[nn.Module | None]:
    """DropBlock for stages 3 and 4 only (small blocks on the small maps, as in the DropBlock paper)."""
    if not drop_block_rate:
        return [None] * 4
    return [None, None, DropBlock2d(drop_block_rate, 5, 0.25), DropBlock2d(drop_block_rate, 3, 1.0)]


class ResNet(FeatureMixin, ModelForwardMixin, nn.Module):
    """ResNet/ResNeXt/SE-ResNet/ECA-ResNet/ResNet-RS backbone + global pool + linear classifier.

    ``stem_type``: ``''`` (7x7 conv), ``'deep'`` (three 3x3 convs) or ``'deep_tiered'``
    (3x3 convs of ``3/4 * stem_width``, ``stem_width``, ``2 * stem_width`` channels).
    ``avg_down`` uses ResNet-D average-pool shortcuts; ``replace_stem_pool`` swaps the stem
    max-pool for a strided 3x3 conv (ResNet-RS); ``aa_layer`` ('avg' | 'blur') anti-aliases
    every stride-2 op; ``block_widths`` gives explicit per-block widths (pruned checkpoints).
    ``block`` may also be a block class (other families' blocks: Res2Net, ResNeSt, SKNet), and
    ``block_args`` extra keyword arguments every block receives.
    """
    feature_cfg = {"feature_cls": "list", "flatten_sequential": False}  # features_only wrapper (visionzoo.features)

    def __init__(
        self,
        *,
        layers: Sequence[int],
        block: str | Sequence[str] = "bottleneck",
        channels: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
        in_chans: int = 3,
        output_stride: int = 32,
        global_pool: str = "avg",
        cardinality: int = 1,
        base_width: int = 64,
        stem_width: int = 64,
        stem_type: str = "",
        replace_stem_pool: bool = False,
        block_reduce_first: int = 1,
        down_kernel_size: int = 1,
        avg_down: bool = False,
        act_layer: LayerType = "relu",
        norm_layer: LayerType = "batchnorm2d",
        aa_layer: LayerType = None,
        attn_layer: LayerType = None,
        attn_kwargs: dict[str, Any] | None = None,
        block_args: dict[str, Any] | None = None,
        block_widths: Sequence[Sequence[Sequence[int]]] | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        drop_block_rate: float = 0.0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if len(layers) != 4:
            raise ValueError(f"ResNet has four stages, got layers={tuple(layers)}")
        if stem_type not in ("", "deep", "deep_tiered"):
            raise ValueError(f"unknown stem_type {stem_type!r}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        act = get_act_layer(act_layer)
        norm = get_norm_layer(norm_layer)
        attn_cls = get_attn(attn_layer)
        attn = (lambda c: attn_cls(c, **attn_kwargs)) if attn_cls is not None and attn_kwargs else attn_cls
        blocks = [block] * len(layers) if isinstance(block, (str, type)) else list(block)

        # stem
        deep = "deep" in stem_type
        inplanes = stem_width * 2 if deep else 64
        if deep:
            s0, s1 = (3 * (stem_width // 4), stem_width) if "tiered" in stem_type else (stem_width, stem_width)
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_chans, s0, 3, stride=2, padding=1, bias=False), norm(s0), act(inplace=True),
                nn.Conv2d(s0, s1, 3, stride=1, padding=1, bias=False), norm(s1), act(inplace=True),
                nn.Conv2d(s1, inplanes, 3, stride=1, padding=1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(in_chans, inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(inplanes)
        self.act1 = act(inplace=True)
        self.feature_info = [dict(num_chs=inplanes, reduction=2, module="act1")]
        if replace_stem_pool:
            pool = [nn.Conv2d(inplanes, inplanes, 3, stride=1 if aa_layer else 2, padding=1, bias=False)]
            if aa_layer:
                pool.append(create_aa(aa_layer, inplanes, 2))
            self.maxpool: nn.Module = nn.Sequential(*pool, norm(inplanes), act(inplace=True))
        elif aa_layer:
            aa = create_aa(aa_layer, inplanes, 2)
            self.maxpool = aa if isinstance(aa, nn.AvgPool2d) else nn.Sequential(nn.MaxPool2d(3, 1, 1), aa)
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        # stages
        total = sum(layers)
        drop_blocks = _drop_blocks(drop_block_rate)
        net_stride, dilation, prev_dilation, block_idx = 4, 1, 1, 0
        for i, (depth, planes, kind) in enumerate(zip(layers, channels, blocks)):
            block_cls = _BLOCKS[kind] if isinstance(kind, str) else kind  # a name or a block class
            stride = 1 if i == 0 else 2
            if net_stride >= output_stride:
                dilation *= stride
                stride = 1
            else:
                net_stride *= stride
            widths = block_widths[i] if block_widths is not None else [None] * depth
            outplanes = widths[0][-1] if block_widths is not None else planes * block_cls.expansion
            down = None
            if stride != 1 or inplanes != outplanes:
                down_fn = downsample_avg if avg_down else downsample_conv
                down = down_fn(inplanes, outplanes, down_kernel_size, stride=stride, dilation=dilation,
                               first_dilation=prev_dilation, norm_layer=norm)
            stage = []
            for j in range(depth):
                dpr = drop_path_rate * block_idx / max(total - 1, 1)
                stage.append(block_cls(
                    inplanes, planes, stride if j == 0 else 1, down if j == 0 else None,
                    cardinality=cardinality, base_width=base_width, reduce_first=block_reduce_first,
                    dilation=dilation, first_dilation=prev_dilation if j == 0 else dilation,
                    act_layer=act, norm_layer=norm, attn_layer=attn, aa_layer=aa_layer,
                    drop_block=drop_blocks[i], drop_path=dpr, widths=widths[j], **(block_args or {}),
                ))
                inplanes = outplanes
                block_idx += 1
            prev_dilation = dilation
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            self.feature_info.append(dict(num_chs=outplanes, reduction=net_stride, module=f"layer{i + 1}"))

        self.stage_names = [f"layer{i + 1}" for i in range(len(layers))]
        self.num_features = self.head_hidden_size = inplanes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.init_weights(zero_init_last=zero_init_last)

    def init_weights(self, zero_init_last: bool = True) -> None:
        """Kaiming-normal convs (fan-out), unit norms; zero the last norm of each residual branch."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv1(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.forward_stem(x))
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint_seq(self._blocks(), x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def _blocks(self) -> list[nn.Module]:
        """Residual blocks in order."""
        return [b for stage in self._feature_stages() for b in stage.children()]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    # --- FeatureMixin hooks: level 0 = stem activation, 1..4 = layer1..layer4 --------------
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.forward_stem(x)
        return self.maxpool(feat), feat

    def _feature_stages(self) -> list[nn.Module]:
        stages = [getattr(self, name) for name in self.stage_names]
        return [s for s in stages if not isinstance(s, nn.Identity)]  # pruned stages are identities

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # stages are plain Sequentials of blocks, so checkpointing is done here, block by block
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_seq(list(stage.children()), x)
        return stage(x)

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        # pruned stages become identities rather than being deleted: forward_features names
        # layer1..layer4 (TorchScript needs them); the stem max-pool goes when no stage is left
        for name in self.stage_names[num_stages:]:
            setattr(self, name, nn.Identity())
        if num_stages == 0:
            self.maxpool = nn.Identity()


# Channel-pruned ECA-ResNets (Aflalo et al., 2020, "Knapsack Pruning with Inner Distillation"):
# per stage, the stage output width followed by each block's (conv1, conv2) widths.
_PRUNED = {
    "ecaresnet50d_pruned": (
        (19, (47, 18), (52, 22), (64, 35)),
        (171, (85, 37), (107, 80), (120, 85), (125, 87)),
        (818, (198, 126), (255, 232), (256, 233), (253, 235), (256, 225), (256, 239)),
        (2022, (492, 237), (512, 500), (512, 490)),
    ),
    "ecaresnet101d_pruned": (
        (26, (45, 25), (53, 20), (60, 27)),
        (142, (81, 24), (93, 49), (102, 54), (122, 78)),
        (278, (101, 25), (239, 160), (234, 156), (250, 176), (253, 191), (251, 175), (230, 128), (244, 154),
         (244, 159), (238, 97), (244, 149), (253, 181), (245, 119), (255, 216), (256, 201), (253, 149),
         (254, 141), (256, 190), (256, 217), (255, 156), (256, 155), (256, 232), (256, 214)),
        (2042, (499, 289), (512, 512), (512, 502)),
    ),
}


def _pruned_widths(name: str) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    return tuple(tuple((c1, c2, stage[0]) for c1, c2 in stage[1:]) for stage in _PRUNED[name])


_R18, _R34, _R26, _R50, _R101, _R152, _R200, _R269 = (
    (2, 2, 2, 2), (3, 4, 6, 3), (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3), (3, 24, 36, 3),
    (3, 30, 48, 8))
# stem/shortcut flavours from the "bag of tricks" paper, by name suffix
_C = dict(stem_width=32, stem_type="deep")
_D = dict(stem_width=32, stem_type="deep", avg_down=True)
_S = dict(stem_width=64, stem_type="deep")
_T = dict(stem_width=32, stem_type="deep_tiered", avg_down=True)
_SE, _ECA = dict(attn_layer="se"), dict(attn_layer="eca")
_AA, _BLUR = dict(aa_layer="avg"), dict(aa_layer="blur")


def _x(cardinality: int, base_width: int) -> dict[str, int]:
    return dict(cardinality=cardinality, base_width=base_width)


def _r(layers: tuple[int, ...], block: str | tuple[str, ...] = "bottleneck", args: dict[str, Any] | None = None) -> Variant:
    """One row of the table: stage depths, block kind(s) and the other ``ResNet`` arguments."""
    return Variant(ResNet, layers=layers, block=block, **(args or {}))


def _rs(layers: tuple[int, ...]) -> Variant:
    """ResNet-RS: ResNet-D with the stem max-pool replaced by a conv, SE (ratio 1/4) everywhere."""
    return _r(layers, args=dict(**_D, replace_stem_pool=True, attn_layer="se", attn_kwargs=dict(rd_ratio=0.25)))


_BASIC, _BOTTLE = "basic", "bottleneck"
VARIANTS: dict[str, Variant] = {
    "resnet10t": _r((1, 1, 1, 1), _BASIC, _T),
    "resnet14t": _r((1, 1, 1, 1), _BOTTLE, _T),
    "resnet18": _r(_R18, _BASIC),
    "resnet18d": _r(_R18, _BASIC, _D),
    "resnet34": _r(_R34, _BASIC),
    "resnet34d": _r(_R34, _BASIC, _D),
    "resnet26": _r(_R26),
    "resnet26t": _r(_R26, args=_T),
    "resnet26d": _r(_R26, args=_D),
    "resnet50": _r(_R50),
    "resnet50c": _r(_R50, args=_C),
    "resnet50d": _r(_R50, args=_D),
    "resnet50s": _r(_R50, args=_S),
    "resnet50t": _r(_R50, args=_T),
    "resnet101": _r(_R101),
    "resnet101c": _r(_R101, args=_C),
    "resnet101d": _r(_R101, args=_D),
    "resnet101s": _r(_R101, args=_S),
    "resnet152": _r(_R152),
    "resnet152c": _r(_R152, args=_C),
    "resnet152d": _r(_R152, args=_D),
    "resnet152s": _r(_R152, args=_S),
    "resnet200": _r(_R200),
    "resnet200d": _r(_R200, args=_D),
    "wide_resnet50_2": _r(_R50, args=dict(base_width=128)),
    "wide_resnet101_2": _r(_R101, args=dict(base_width=128)),
    "resnet50_gn": _r(_R50, args=dict(norm_layer="groupnorm")),
    "resnext50_32x4d": _r(_R50, args=_x(32, 4)),
    "resnext50d_32x4d": _r(_R50, args=dict(**_x(32, 4), **_D)),
    "resnext101_32x4d": _r(_R101, args=_x(32, 4)),
    "resnext101_32x8d": _r(_R101, args=_x(32, 8)),
    "resnext101_32x16d": _r(_R101, args=_x(32, 16)),
    "resnext101_32x32d": _r(_R101, args=_x(32, 32)),
    "resnext101_64x4d": _r(_R101, args=_x(64, 4)),
    "ecaresnet26t": _r(_R26, args=dict(**_T, **_ECA)),
    "ecaresnetlight": _r((1, 1, 11, 3), args=dict(avg_down=True, **_ECA)),
    "ecaresnet50d": _r(_R50, args=dict(**_D, **_ECA)),
    "ecaresnet50d_pruned": _r(_R50, args=dict(**_D, **_ECA,
                                                     block_widths=_pruned_widths("ecaresnet50d_pruned"))),
    "ecaresnet50t": _r(_R50, args=dict(**_T, **_ECA)),
    "ecaresnet101d": _r(_R101, args=dict(**_D, **_ECA)),
    "ecaresnet101d_pruned": _r(_R101, args=dict(**_D, **_ECA,
                                                       block_widths=_pruned_widths("ecaresnet101d_pruned"))),
    "ecaresnet200d": _r(_R200, args=dict(**_D, **_ECA)),
    "ecaresnet269d": _r(_R269, args=dict(**_D, **_ECA)),
    "ecaresnext26t_32x4d": _r(_R26, args=dict(**_x(32, 4), **_T, **_ECA)),
    "ecaresnext50t_32x4d": _r(_R50, args=dict(**_x(32, 4), **_T, **_ECA)),
    "seresnet18": _r(_R18, _BASIC, _SE),
    "seresnet34": _r(_R34, _BASIC, _SE),
    "seresnet50": _r(_R50, args=_SE),
    "seresnet50t": _r(_R50, args=dict(**_T, **_SE)),
    "seresnet101": _r(_R101, args=_SE),
    "seresnet152": _r(_R152, args=_SE),
    "seresnet152d": _r(_R152, args=dict(**_D, **_SE)),
    "seresnet200d": _r(_R200, args=dict(**_D, **_SE)),
    "seresnet269d": _r(_R269, args=dict(**_D, **_SE)),
    "seresnext26d_32x4d": _r(_R26, args=dict(**_x(32, 4), **_D, **_SE)),
    "seresnext26t_32x4d": _r(_R26, args=dict(**_x(32, 4), **_T, **_SE)),
    "seresnext50_32x4d": _r(_R50, args=dict(**_x(32, 4), **_SE)),
    "seresnext101_32x4d": _r(_R101, args=dict(**_x(32, 4), **_SE)),
    "seresnext101_32x8d": _r(_R101, args=dict(**_x(32, 8), **_SE)),
    "seresnext101_64x4d": _r(_R101, args=dict(**_x(64, 4), **_SE)),
    "seresnext101d_32x8d": _r(_R101, args=dict(**_x(32, 8), **_D, **_SE)),
    "senet154": _r(_R152, args=dict(**_x(64, 4), stem_width=64, stem_type="deep", down_kernel_size=3,
                                           block_reduce_first=2, **_SE)),
    "resnetaa34d": _r(_R34, _BASIC, dict(**_D, **_AA)),
    "resnetaa50": _r(_R50, args=_AA),
    "resnetaa50d": _r(_R50, args=dict(**_D, **_AA)),
    "resnetaa101d": _r(_R101, args=dict(**_D, **_AA)),
    "seresnetaa50d": _r(_R50, args=dict(**_D, **_AA, **_SE)),
    "seresnextaa101d_32x8d": _r(_R101, args=dict(**_x(32, 8), **_D, **_AA, **_SE)),
    "seresnextaa201d_32x8d": _r((3, 24, 36, 4), args=dict(**_x(32, 8), **{**_D, "stem_width": 64},
                                                                 **_AA, **_SE)),
    "resnetblur18": _r(_R18, _BASIC, _BLUR),
    "resnetblur50": _r(_R50, args=_BLUR),
    "resnetblur50d": _r(_R50, args=dict(**_D, **_BLUR)),
    "resnetblur101d": _r(_R101, args=dict(**_D, **_BLUR)),
    "resnetrs50": _rs(_R50),
    "resnetrs101": _rs(_R101),
    "resnetrs152": _rs(_R152),
    "resnetrs200": _rs(_R200),
    "resnetrs270": _rs((4, 29, 53, 4)),
    "resnetrs350": _rs((4, 36, 72, 4)),
    "resnetrs420": _rs((4, 44, 87, 4)),
    # a tiny mixed-block net for fast tests
    "test_resnet": _r((1, 1, 1, 1), (_BASIC, _BASIC, _BOTTLE, _BASIC),
                             dict(channels=(32, 48, 48, 96), stem_width=16, stem_type="deep", avg_down=True)),
}


register_family("resnet", VARIANTS)
