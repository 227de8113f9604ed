"""Bring-your-own-attention nets: ResNet-style hybrids whose later stages use spatial
self-attention blocks, declared as :class:`~visionzoo.models.byobnet.NetSpec` stage specs and built
by :class:`~visionzoo.models.byobnet.ByobNet`.

* BoTNet (Srinivas et al., 2021): all-to-all multi-head attention with 2-D relative positions
  (``layers/bottleneck_attn.py``), needs a fixed input size (``*_256``);
* HaloNet (Vaswani et al., 2021): blocked local attention with halos (``layers/halo_attn.py``);
* LambdaNetworks (Bello, 2021): lambda layers with a local lambda conv or relative position
  embeddings (``layers/lambda_layer.py``);
* mixes of the three (``lamhalobotnet``, ``halo2botnet``) and RegNetZ with halo attention.

A stage string such as ``"BABA"`` lists its blocks: ``B`` a bottleneck, ``A`` a self-attention block.
"""
from __future__ import annotations

from typing import Any

from .base import Variant, register_family
from .byobnet import BlockSpec, ByobNet, NetSpec

__all__ = ["VARIANTS"]


def _stage(layout: str, chs: int, stride: int = 2, group_size: int = 0, bottle: float = 0.25,
           **kw: Any) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec("self_attn" if t == "A" else "bottle", 1, chs, stride, group_size, bottle, **kw)
                 for t in layout)


def _v(img_size: int | None = None, **spec: Any) -> Variant:
    cfg = NetSpec(**{"stem_chs": 64, "stem_type": "tiered", **spec})
    return Variant(ByobNet, cfg=cfg, img_size=img_size) if img_size else Variant(ByobNet, cfg=cfg)


_26 = ("BB", "BB", "BA", "AA")
_50 = ("BBB", "BBBA", "BABABA", "BAB")
_33 = ("BB", "BBA", "BBA", "AA")
_50x = ("BBB", "BABA", "BABABA", "BAB")


def _blocks(layouts: tuple[str, ...], chs=(256, 512, 1024, 2048), group_size: int = 0, last_bottle: float = 0.25,
            per_stage: tuple[dict, ...] = ({}, {}, {}, {})) -> tuple:
    return tuple(_stage(lay, c, 1 if i == 0 else 2, group_size, last_bottle if i == 3 else 0.25, **per_stage[i])
                 for i, (lay, c) in enumerate(zip(layouts, chs)))


_BOT = dict(self_attn="bottleneck", fixed_input_size=True)
_HALO8_2 = dict(self_attn="halo", self_attn_kwargs=dict(block_size=8, halo_size=2))
_HALO8_3 = dict(self_attn="halo", self_attn_kwargs=dict(block_size=8, halo_size=3))

VARIANTS: dict[str, Variant] = {
    "botnet26t_256": _v(256, blocks=_blocks(_26), stem_pool="maxpool", **_BOT),
    "sebotnet33ts_256": _v(256, blocks=_blocks(_33, (256, 512, 1024, 1536), last_bottle=0.333), stem_pool="",
                           act="silu", num_features=1280, attn="se", **_BOT),
    "botnet50ts_256": _v(256, blocks=_blocks(_50), stem_pool="maxpool", act="silu", **_BOT),
    "eca_botnext26ts_256": _v(256, blocks=_blocks(_26, group_size=16), stem_pool="maxpool", act="silu", attn="eca",
                              self_attn_kwargs=dict(dim_head=16), **_BOT),
    "halonet_h1": _v(blocks=(_stage("AAA", 64, 1, bottle=1.0), _stage("AAA", 128, bottle=1.0),
                             _stage("A" * 10, 256, bottle=1.0), _stage("AAA", 512, bottle=1.0)),
                     stem_type="7x7", stem_pool="maxpool", **_HALO8_3),
    "halonet26t": _v(blocks=_blocks(_26), stem_pool="maxpool", **_HALO8_2),
    "sehalonet33ts": _v(blocks=_blocks(_33, (256, 512, 1024, 1536), last_bottle=0.333), stem_pool="", act="silu",
                        num_features=1280, attn="se", **_HALO8_3),
    "halonet50ts": _v(blocks=_blocks(_50, per_stage=({}, dict(self_attn_kwargs=dict(block_size=8, halo_size=3, num_heads=4)),
                                                     {}, {})), stem_pool="maxpool", act="silu", **_HALO8_3),
    "eca_halonext26ts": _v(blocks=_blocks(_26, group_size=16), stem_pool="maxpool", act="silu", attn="eca",
                           self_attn="halo", self_attn_kwargs=dict(block_size=8, halo_size=2, dim_head=16)),
    "lambda_resnet26t": _v(blocks=_blocks(_26), stem_pool="maxpool", self_attn="lambda",
                           self_attn_kwargs=dict(r=9)),
    "lambda_resnet50ts": _v(blocks=_blocks(_50), stem_pool="maxpool", act="silu", self_attn="lambda",
                            self_attn_kwargs=dict(r=9)),
    "lambda_resnet26rpt_256": _v(256, blocks=_blocks(_26), stem_pool="maxpool", self_attn="lambda",
                                 self_attn_kwargs=dict(r=None), fixed_input_size=True),
    "haloregnetz_b": _v(blocks=(_stage("BB", 48, 2, 16, 3.0), _stage("B" * 6, 96, 2, 16, 3.0),
                                _stage("BBBA" * 3, 192, 2, 16, 3.0), _stage("AA", 288, 2, 16, 3.0)),
                        stem_chs=32, stem_type="3x3", stem_pool="", downsample="", num_features=1536, act="silu",
                        attn="se", attn_kwargs=dict(rd_ratio=0.25), block_kwargs=dict(bottle_in=True, linear_out=True),
                        self_attn="halo", self_attn_kwargs=dict(block_size=7, halo_size=2, qk_ratio=0.33)),
    "lamhalobotnet50ts_256": _v(256, blocks=_blocks(_50x, per_stage=(
        {}, dict(self_attn="lambda", self_attn_kwargs=dict(r=13)), dict(self_attn="halo", self_attn_kwargs={}),
        dict(self_attn="bottleneck", self_attn_kwargs={}))), stem_pool="", act="silu", fixed_input_size=True),
    "halo2botnet50ts_256": _v(256, blocks=_blocks(_50x, per_stage=(
        {}, dict(self_attn="halo", self_attn_kwargs={}), dict(self_attn="halo", self_attn_kwargs={}),
        dict(self_attn="bottleneck", self_attn_kwargs={}))), stem_pool="", act="silu", fixed_input_size=True),
}

register_family("byoanet", VARIANTS)
