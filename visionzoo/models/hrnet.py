"""HRNet (Wang et al., 2019, https://arxiv.org/abs/1908.07919): high-resolution representations
kept through the whole network.

After a two-conv stride-4 stem and a stage of bottlenecks, the net runs parallel branches at
strides 4, 8, 16 and 32 (widths C, 2C, 4C, 8C); each stage adds one lower-resolution branch (a
strided 3x3 conv from the lowest one) and is a run of "high-resolution modules": residual blocks per
branch, then every branch output is fused into every other (1x1 conv + nearest upsampling from
lower resolutions, chains of strided 3x3 convs from higher ones, summed, ReLU).
The classification head widens each branch with a bottleneck (``incre_modules``: 128, 256, 512,
1024 channels), folds them high-to-low with strided 3x3 convs (``downsamp_modules``) and ends with
a 1x1 conv to 2048. ``features_only`` gives the reference's incremental features: the stem map and
the four widened branch maps (the ``HighResolutionNetFeatures`` layout: the model's own keys
without the folding convs, the final conv and the classifier).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.grad_checkpoint import checkpoint_module
from ..layers.pool import create_classifier
from .base import FeatureMixin, ModelForwardMixin, Variant, register_family
from .resnet import BasicBlock, Bottleneck

__all__ = ["HighResolutionNet", "HighResolutionModule", "VARIANTS"]

_HEAD_CHS = (32, 64, 128, 256)  # incre bottleneck widths (x4 = 128, 256, 512, 1024 out)


def _conv_bn(in_chs: int, out_chs: int, stride: int = 1, relu: bool = True, kernel_size: int = 3,
             bias: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=bias),
                               nn.BatchNorm2d(out_chs)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _layer(block: type, in_chs: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first projects the shortcut when the shape changes."""
    out_chs = planes * block.expansion
    down = None
    if stride != 1 or in_chs != out_chs:
        down = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))
    layers = [block(in_chs, planes, stride, down)]
    layers += [block(out_chs, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Per-branch residual blocks, then all-to-all fusion of the branch maps."""

    def __init__(self, chs: tuple[int, ...], blocks: tuple[int, ...], block: type, multi_scale_output: bool = True) -> None:
        super().__init__()
        n = len(chs)
        self.branches = nn.ModuleList([_layer(block, chs[i], chs[i] // block.expansion, blocks[i]) for i in range(n)])
        fuse: list[nn.Module] = []
        for i in range(n if multi_scale_output else 1):
            row: list[Optional[nn.Module]] = []
            for j in range(n):
                if j > i:  # lower resolution: 1x1 conv to this width, BN, upsample (in forward)
                    row.append(nn.Sequential(nn.Conv2d(chs[j], chs[i], 1, bias=False), nn.BatchNorm2d(chs[i])))
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher resolution: (i - j) strided 3x3 convs, the last to this width without ReLU
                    row.append(nn.Sequential(*[
                        _conv_bn(chs[j], chs[i] if k == i - j - 1 else chs[j], 2, relu=k < i - j - 1)
                        for k in range(i - j)]))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.fuse_act = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(xs[i]) for i, branch in enumerate(self.branches)]
        out: list[torch.Tensor] = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, f in enumerate(row):  # summed in branch order (the float32 rounding of the reference)
                z = f(xs[j])
                if j > i:
                    z = F.interpolate(z, size=[xs[i].shape[-2], xs[i].shape[-1]], mode="nearest")
                y = z if j == 0 else y + z
            out.append(self.fuse_act(y))
        return out


class _Stage(nn.Sequential):
    """A run of high-resolution modules on a list of branch maps."""

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:  # type: ignore[override]
        for m in self:
            xs = m(xs)
        return xs


class _Transition(nn.ModuleList):
    """Branch inputs of the next stage: width changes by a 3x3 conv; the new branch by a strided 3x3
    conv from the lowest-resolution branch."""

    def __init__(self, prev: tuple[int, ...] = (), chs: tuple[int, ...] = ()) -> None:
        mods: list[nn.Module] = []
        for i, c in enumerate(chs):
            if i < len(prev):
                mods.append(_conv_bn(prev[i], c) if prev[i] != c else nn.Identity())
            else:
                mods.append(nn.Sequential(*[_conv_bn(prev[-1], c if k == i - len(prev) else prev[-1], 2)
                                            for k in range(i - len(prev) + 1)]))
        super().__init__(mods)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(xs)
        return [m(xs[i] if i < n else xs[n - 1]) for i, m in enumerate(self)]


class HighResolutionNet(FeatureMixin, ModelForwardMixin, nn.Module):
    """HRNet-W``C`` image classifier.

    Args:
        width: C, the highest-resolution branch width.
        stage1: ``(blocks, width)`` of the bottleneck stage; stages: per stage 2..4
            ``(num_modules, blocks per branch)``.
        head_bias: bias on the head's folding/final convs (the Paddle SSLD ports have none).
    """

    feature_cfg = {"feature_cls": "HighResolutionNetFeatures"}  # the reference's incre-features wrapper
    _stem_level = True

    def __init__(self, *, width: int = 18, stage1: tuple[int, int] = (4, 64),
                 stages: tuple[tuple[int, int], ...] = ((1, 4), (4, 4), (3, 4)), head_bias: bool = True,
                 num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0,
                 output_stride: int = 32) -> None:
        super().__init__()
        if output_stride != 32:
            raise ValueError(f"HRNet supports output_stride=32 only, got {output_stride}")
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU(inplace=True)
        self.stem = nn.Identity()  # names the stem level (feature_info 'stem'): the act1 map passes it
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = nn.ReLU(inplace=True)
        blocks1, w1 = stage1
        self.layer1 = _layer(Bottleneck, 64, w1, blocks1)
        prev: tuple[int, ...] = (w1 * Bottleneck.expansion,)
        for si, (num_modules, nb) in enumerate(stages):
            chs = tuple(width * 2 ** k for k in range(si + 2))
            setattr(self, f"transition{si + 1}", _Transition(prev, chs))
            setattr(self, f"stage{si + 2}", _Stage(*[
                HighResolutionModule(chs, (nb,) * len(chs), BasicBlock) for _ in range(num_modules)]))
            prev = chs
        self.incre_modules = nn.ModuleList([_layer(Bottleneck, c, h, 1) for c, h in zip(prev, _HEAD_CHS)])
        # The reference names the incremental levels 'stage1'..'stage4'; 'stage1' has no module of its
        # own, so this parameter-free alias (after the incre modules) carries the first incre map. The
        # list/dict wrappers read the levels through forward_intermediates; forward hooks on
        # 'stage2'..'stage4' would catch the high-resolution stages instead (use the default wrapper).
        self.stage1 = nn.Identity()
        head_out = [h * Bottleneck.expansion for h in _HEAD_CHS]
        self.downsamp_modules = nn.ModuleList([_conv_bn(head_out[i], head_out[i + 1], 2, bias=head_bias)
                                               for i in range(len(head_out) - 1)])
        self.num_features = self.head_hidden_size = 2048
        self.final_layer = _conv_bn(head_out[-1], self.num_features, 1, kernel_size=1, bias=head_bias)
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.feature_info = [dict(num_chs=64, reduction=2, module="stem")] + [
            dict(num_chs=c, reduction=2 ** (i + 2), module=f"stage{i + 1}") for i, c in enumerate(head_out)]

    # --- classifier -----------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=pool)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    # --- trunk ----------------------------------------------------------------------------------
    def _branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four branch maps after stage 4, from the stem output."""
        xs = self.stage2(self.transition1([self.layer1(x)]))
        xs = self.stage3(self.transition2(xs))
        return self.stage4(self.transition3(xs))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            xs = checkpoint_module(self._branches, x)
        else:
            xs = self._branches(x)
        ys = [m(xs[i]) for i, m in enumerate(self.incre_modules)]
        y = ys[0]
        for i, down in enumerate(self.downsamp_modules):
            y = ys[i + 1] + down(y)
        return self.final_layer(y)

    # --- FeatureMixin hooks ---------------------------------------------------------------------
    # Trunk: [layer1, stage2, stage3, stage4, incre_modules 0..3]; the state carried between them is
    # the stem map, then the branch list, then (branches, this level's map, the running fold).
    # Levels: the first stem conv's map (-1) and each incre module's output (positions 4..7).
    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        s = self.stem(self.act1(self.bn1(self.conv1(x))))
        return self.act2(self.bn2(self.conv2(s))), s

    def _feature_stages(self) -> list[nn.Module]:
        names = ("layer1", "stage2", "stage3", "stage4")
        trunk = [getattr(self, n) for n in names if not isinstance(getattr(self, n), nn.Identity)]
        return trunk + (list(self.incre_modules) if len(trunk) == len(names) else [])

    def _level_positions(self) -> list[int]:
        return [-1] + list(range(4, len(self._feature_stages())))

    def _run_stage(self, index: int, stage: nn.Module, x):  # noqa: ANN001 - the carried state varies
        if index == 0:
            return self.transition1([stage(x)])
        if index < 3:
            return getattr(self, f"transition{index + 1}")(stage(x))
        if index == 3:
            return stage(x), None, None
        xs, _, fold = x
        k = index - 4
        y = stage(xs[k])
        if k == 0:
            y = self.stage1(y)
        if k == 0 or len(self.downsamp_modules) < k:
            fold = y
        else:
            fold = y + self.downsamp_modules[k - 1](fold)
        return xs, y, fold

    def _level_output(self, x, is_last: bool, norm: bool, output_fmt: str,  # noqa: ANN001
                      in_size: tuple[int, int]) -> torch.Tensor:
        return x[1] if isinstance(x, tuple) else x

    def _final(self, x):  # noqa: ANN001
        if isinstance(x, tuple) and isinstance(self.final_layer, nn.Sequential):
            return self.final_layer(x[2])
        return x[2] if isinstance(x, tuple) else x

    def _prune_to(self, num_stages: int, prune_norm: bool) -> None:
        names = ("layer1", "stage2", "stage3", "stage4")
        for i, n in enumerate(names):
            if i >= num_stages:
                setattr(self, n, nn.Identity())
                if i:
                    setattr(self, f"transition{i}", _Transition())
        self.incre_modules = self.incre_modules[:max(num_stages - 4, 0)]

    def _prune_head(self) -> None:
        """The incremental-features layout keeps no folding convs, final conv or classifier."""
        self.downsamp_modules = nn.ModuleList()
        self.final_layer = nn.Identity()
        self.reset_classifier(0, "")


def _v(width: int, **kw) -> Variant:
    return Variant(HighResolutionNet, width=width, **kw)


_SMALL = dict(stage1=(1, 32), stages=((1, 2), (1, 2), (1, 2)))
_SMALL_V2 = dict(stage1=(2, 64), stages=((1, 2), (3, 2), (2, 2)))
VARIANTS: dict[str, Variant] = {
    "hrnet_w18_small": _v(16, **_SMALL),
    "hrnet_w18_small_v2": _v(18, **_SMALL_V2),
    "hrnet_w18": _v(18),
    "hrnet_w30": _v(30),
    "hrnet_w32": _v(32),
    "hrnet_w40": _v(40),
    "hrnet_w44": _v(44),
    "hrnet_w48": _v(48),
    "hrnet_w64": _v(64),
    "hrnet_w18_ssld": _v(18, head_bias=False),
    "hrnet_w48_ssld": _v(48, head_bias=False),
}
register_family("hrnet", VARIANTS)
