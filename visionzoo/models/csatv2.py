"""CSATv2: a high-resolution backbone that starts in the JPEG frequency domain.

CSATv2 (released at ``huggingface.co/Hyunil/CSATv2``; an improved version of the CSAT architecture,
Bioengineering 10(11):1279, 2023) is built for 512 px+ throughput (pathology whole-slide patches):

* the stem does what a JPEG encoder does instead of a strided conv: the ImageNet-normalised input is
  taken back to 0..255 RGB, converted to YCbCr and cut into 8x8 blocks, each block goes through a
  2-D DCT (``D X D^T``, ``D`` the orthonormal DCT-II basis, stored with the weights) and the
  64 coefficients of each colour component are standardised, then compressed by one 1x1 conv per
  component (luma gets 3/4 of the width, each chroma 1/8). The stem alone reduces by 8;
* the stages are ConvNeXt V2 blocks (GRN in the MLP) with a CBAM-style spatial gate on the residual
  branch: channel mean/max -> 7x7 conv -> a one-channel transformer over the map -> sigmoid (its
  one-channel LayerNorms output their bias, so attention and MLP only add constants there);
* the last two stages end with transformer blocks (convolutional position encoding, attention with
  a fixed inner width of 256) running on the full, already small, token grid;
* stages 1-3 start with a 2x2 stride-2 conv and stages 0-2 end with a LayerNorm; the head is
  pool -> LayerNorm -> fc.

Known gap (why the family is not shipped yet): the reference standardises the DCT coefficients
with fixed per-coefficient ImageNet statistics that are not in the state_dict and have no public
source usable here; ``dct_mean`` / ``dct_std`` default to 0 / 1, so published weights do not give the
published outputs, and the choices the state_dict cannot pin down (the gate on the residual branch
before the sum, 8 heads x 32, LayerNorm epsilons) are unverified against the reference's numerics.
Keys, shapes, parameter counts and ``feature_info`` equal the reference's.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.drop import DropPath, drop_path_rates
from ..layers.grad_checkpoint import checkpoint_seq
from ..layers.grn import GlobalResponseNorm
from ..layers.mlp import Mlp
from ..layers.norm import LayerNorm2d
from ..layers.pool import NormMlpClassifierHead
from ..layers.weight_init import trunc_normal_
from .base import ClassifierHeadMixin, FeatureMixin, Variant, register_family

__all__ = ["CSATv2", "VARIANTS"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# JPEG (ITU-T T.871) full-range RGB -> YCbCr
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCBCR_OFFSET = (0.0, 128.0, 128.0)


def dct_matrix(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Orthonormal DCT-II basis: row ``k`` is ``c_k cos(pi (2i + 1) k / 2n)``."""
    k = torch.arange(n, dtype=torch.float64, device=device)[:, None]
    i = torch.arange(n, dtype=torch.float64, device=device)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    m[0] = m[0] / math.sqrt(2.0)
    return m.float()


class DctBasis(nn.Module):
    """The 1-D DCT basis ``weights`` (``n x n``, a persistent buffer: saved, not trained), applied
    along both axes of a block."""

    def __init__(self, block_size: int = 8) -> None:
        super().__init__()
        self.register_buffer("weights", dct_matrix(block_size))

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        """``[..., n, n]`` blocks -> ``D X D^T`` coefficients, same shape."""
        return self.weights @ blocks @ self.weights.t()


class BlockDct(nn.Module):
    """RGB (ImageNet-normalised) -> per-component maps of 64 standardised 8x8-block DCT coefficients.

    Output ``[B, 3, 64, H/8, W/8]``: component (Y, Cb, Cr), coefficient ``u * 8 + v``, block grid.
    """

    def __init__(self, block_size: int = 8) -> None:
        super().__init__()
        self.block_size = block_size
        self.transform = DctBasis(block_size)
        self.init_non_persistent_buffers()

    def init_non_persistent_buffers(self) -> None:
        n2 = self.block_size ** 2
        dev = self.transform.weights.device
        dev = None if dev.type == "meta" else dev
        mean = torch.tensor(_IMAGENET_MEAN, device=dev).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(_IMAGENET_STD, device=dev).view(1, 3, 1, 1) * 255.0
        self.register_buffer("rgb_mean", mean, persistent=False)
        self.register_buffer("rgb_std", std, persistent=False)
        self.register_buffer("ycbcr", torch.tensor(_RGB_TO_YCBCR, device=dev), persistent=False)
        self.register_buffer("ycbcr_offset", torch.tensor(_YCBCR_OFFSET, device=dev).view(1, 3, 1, 1),
                             persistent=False)
        # per-coefficient standardisation (see the module docstring: statistics not reproduced)
        self.register_buffer("dct_mean", torch.zeros(1, 3, n2, 1, 1, device=dev), persistent=False)
        self.register_buffer("dct_std", torch.ones(1, 3, n2, 1, 1, device=dev), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.block_size
        b, _, h, w = x.shape
        rgb = x * self.rgb_std + self.rgb_mean  # back to 0..255
        ycc = torch.einsum("oc,bchw->bohw", self.ycbcr, rgb) + self.ycbcr_offset
        # [B, 3, H/n, n, W/n, n] -> [B, 3, H/n, W/n, n, n]
        blocks = ycc.reshape(b, 3, h // n, n, w // n, n).permute(0, 1, 2, 4, 3, 5)
        coef = self.transform(blocks)
        coef = coef.reshape(b, 3, h // n, w // n, n * n).permute(0, 1, 4, 2, 3)
        return (coef - self.dct_mean) / self.dct_std


class DctStem(nn.Module):
    """Block DCT, then one 1x1 conv per colour component; the outputs are concatenated."""

    def __init__(self, out_chs: int, block_size: int = 8) -> None:
        super().__init__()
        n2 = block_size ** 2
        chroma = out_chs // 8
        self.transform = BlockDct(block_size)
        self.conv_y = nn.Conv2d(n2, out_chs - 2 * chroma, 1)
        self.conv_cb = nn.Conv2d(n2, chroma, 1)
        self.conv_cr = nn.Conv2d(n2, chroma, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, cb, cr = self.transform(x).unbind(1)
        return torch.cat([self.conv_y(y), self.conv_cb(cb), self.conv_cr(cr)], dim=1)


def _attend(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head softmax attention from fused ``[B, N, 3 * inner]`` projections -> ``[B, N, inner]``."""
    b, n, _ = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, -1)


class InnerDimAttention(nn.Module):
    """Self-attention whose heads span a fixed ``num_heads * head_dim`` width, independent of ``dim``."""

    def __init__(self, dim: int, num_heads: int = 8, head_dim: int = 32) -> None:
        super().__init__()
        self.num_heads = num_heads
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(_attend(self.qkv(x), self.num_heads))


class ConvPosEmbed(nn.Module):
    """Conditional position encoding: ``x + depthwise 3x3 conv(x)`` on the map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on a NCHW map: conv position encoding, global attention, MLP."""

    def __init__(self, dim: int, *, num_heads: int = 8, head_dim: int = 32, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.pos_embed = ConvPosEmbed(dim)
        self.norm1 = nn.LayerNorm(dim)
        self._make_attn(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def _make_attn(self, dim: int, num_heads: int, head_dim: int) -> None:
        self.attn = InnerDimAttention(dim, num_heads, head_dim)

    def _mix(self, t: torch.Tensor) -> torch.Tensor:
        return self.attn(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_embed(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path(self._mix(self.norm1(t)))
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return t.transpose(1, 2).reshape(b, c, h, w)


class MapTransformer(TransformerBlock):
    """The spatial gate's transformer: one channel, one head, the fused ``qkv`` on the block itself and
    no output projection — every position of the gate map attends to every other one."""

    def __init__(self) -> None:
        super().__init__(1, num_heads=1, head_dim=1)

    def _make_attn(self, dim: int, num_heads: int, head_dim: int) -> None:
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim, bias=False)

    def _mix(self, t: torch.Tensor) -> torch.Tensor:
        return _attend(self.qkv(t), 1)


class SpatialGate(nn.Module):
    """CBAM spatial attention with a global step: [mean_c, max_c] -> 7x7 conv -> transformer -> sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)
        self.attn = MapTransformer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.attn(self.conv(s)))


class ConvBlock(nn.Module):
    """ConvNeXt V2 block (dw 7x7 -> LN -> 4x MLP with GRN) whose branch is gated by :class:`SpatialGate`."""

    def __init__(self, dim: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(hidden, channels_last=True)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.attn = SpatialGate()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y))))).permute(0, 3, 1, 2)
        return x + self.drop_path(self.attn(y))


class CSATv2(FeatureMixin, ClassifierHeadMixin, nn.Module):
    """CSATv2: JPEG-style DCT stem, spatially gated ConvNeXt V2 stages, transformer blocks at the end.

    ``depths`` counts the conv blocks per stage, ``transformer_depths`` the transformer blocks that
    follow them. Stage ``i > 0`` starts with a 2x2 stride-2 conv; all stages but the last end with a
    LayerNorm (the head norms the last one).
    """

    feature_cfg = {"feature_cls": "list", "flatten_sequential": True, "out_indices": (1, 2, 3, 4)}

    def __init__(self, *, dims: Sequence[int] = (32, 72, 168, 386), depths: Sequence[int] = (2, 2, 6, 4),
                 transformer_depths: Sequence[int] = (0, 0, 2, 2), num_heads: int = 8, head_dim: int = 32,
                 mlp_ratio: float = 4.0, num_classes: int = 1000, in_chans: int = 3, global_pool: str = "avg",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if in_chans != 3:
            raise ValueError("CSATv2's DCT stem works on RGB (YCbCr) input: in_chans must be 3")
        self.num_classes, self.grad_checkpointing = num_classes, False
        self.stem_dct = DctStem(dims[0])
        per_block = drop_path_rates(drop_path_rate, [d + t for d, t in zip(depths, transformer_depths)])
        stages, prev = [], dims[0]
        self.feature_info = [dict(num_chs=dims[0], reduction=8, module="stem_dct")]
        for i, (dim, d, t) in enumerate(zip(dims, depths, transformer_depths)):
            layers: list[nn.Module] = [] if i == 0 else [nn.Conv2d(prev, dim, 2, stride=2)]
            dpr = per_block[i]
            layers += [ConvBlock(dim, mlp_ratio=mlp_ratio, drop_path=dpr[j]) for j in range(d)]
            layers += [TransformerBlock(dim, num_heads=num_heads, head_dim=head_dim, mlp_ratio=mlp_ratio,
                                        drop_path=dpr[d + j]) for j in range(t)]
            if i < len(dims) - 1:
                layers.append(LayerNorm2d(dim))
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=dim, reduction=8 * 2 ** i, module=f"stages.{i}"))
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.head = NormMlpClassifierHead(dims[-1], num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """ConvNeXt-style: truncated-normal (std 0.02) linear and conv weights, zero biases."""
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def init_non_persistent_buffers(self) -> None:
        self.stem_dct.transform.init_non_persistent_buffers()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_dct(x)
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    # FeatureMixin hooks: level 0 is the DCT stem's map, then one level per stage
    _stem_level = True

    def _forward_stem(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem_dct(x)
        return x, x

    def _run_stage(self, index: int, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint_seq(stage, x)
        return stage(x)


_base = Variant(CSATv2, dims=(32, 72, 168, 386), depths=(2, 2, 6, 4), transformer_depths=(0, 0, 2, 2))
VARIANTS: dict[str, Variant] = {
    "csatv2": _base,
    "csatv2_21m": _base.but(dims=(48, 96, 224, 448), depths=(3, 3, 6, 5), transformer_depths=(0, 0, 4, 3)),
}
register_family("csatv2", VARIANTS)
