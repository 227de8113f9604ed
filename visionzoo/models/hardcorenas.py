"""HardCoRe-NAS (Nayman et al., 2021, https://arxiv.org/abs/2102.11646): hard-constrained
differentiable architecture search over a MobileNetV3-like space, one network per latency target
(a = fastest ... f = slowest).

Every searched network is a MobileNetV3 (same stem, pooled 1x1-conv head, hard-swish, SE with
hard-sigmoid gate sized from the expanded width); only the per-block choices of kernel (3/5),
expansion (3/4/6), SE on/off and depth per stage differ, so each variant is a list of block
definitions for the shared mobile-block builder. The first three stages use ReLU.
"""
from __future__ import annotations

from .base import Variant, register_family
from ._mobile_builder import MobileArch, SeCfg
from .mobilenetv3 import MobileNetV3

__all__ = ["VARIANTS"]

# block choices per stage after the fixed first stage; "Kk/e/se" = kernel, expansion, SE flag.
# Each stage's first block carries the stage stride; channels are fixed by the search space.
_STAGES = ((2, 24, True), (2, 40, True), (2, 80, False), (1, 112, False), (2, 192, False))  # stride, chs, relu


def _arch(*stages: str) -> MobileArch:
    """``stages``: one string per searched stage, blocks separated by ``,`` as ``k<k>e<e>[s]``."""
    defs: list[tuple[str, ...]] = [("ds k3 c16 relu",)]
    for (stride, chs, relu), stage in zip(_STAGES, stages):
        blocks = []
        for i, choice in enumerate(stage.split(",")):
            se = choice.endswith("s")
            k, e = choice.rstrip("s")[1:].split("e")
            line = f"ir k{k} e{e} c{chs}" + (f" s{stride}" if i == 0 else "") + (" se0.25" if se else "")
            blocks.append(line + (" relu" if relu else ""))
        defs.append(tuple(blocks))
    defs.append(("cn k1 c960",))
    # SE: reduce the expanded width by 4 (rounded to 8), ReLU inside, hard-sigmoid gate
    se = SeCfg(gate="hard_sigmoid", act="relu", from_mid=True, divisor=8)
    return MobileArch(tuple(defs), stem_size=32, head_size=1280, head_rule="fixed", mid_divisor=8,
                      act="hard_swish", se=se)


VARIANTS: dict[str, Variant] = {
    "hardcorenas_a": Variant(MobileNetV3, arch=_arch(
        "k5e3,k5e3s", "k5e3,k5e6s", "k5e6s,k5e6s", "k5e6s,k5e6s", "k5e6s,k5e6s")),
    "hardcorenas_b": Variant(MobileNetV3, arch=_arch(
        "k5e3,k5e3s,k3e3", "k5e3,k5e3,k5e3", "k5e3,k5e3,k3e3,k3e3", "k5e3,k3e3,k3e3,k3e3",
        "k5e6s,k5e6s,k3e3s")),
    "hardcorenas_c": Variant(MobileNetV3, arch=_arch(
        "k5e3,k5e3s", "k5e3,k5e3,k5e3,k5e3", "k5e4,k5e6s,k3e3,k3e3", "k5e6s,k3e3,k3e3,k3e3",
        "k5e6s,k5e6s,k3e3s")),
    "hardcorenas_d": Variant(MobileNetV3, arch=_arch(
        "k5e3s,k5e3s", "k5e3s,k5e4s,k3e3s", "k5e4s,k3e3s,k3e3s,k3e3s", "k3e4s,k5e4s,k3e3s,k5e3s",
        "k5e6s,k5e6s,k5e6s,k3e6s")),
    "hardcorenas_e": Variant(MobileNetV3, arch=_arch(
        "k5e3s,k5e3s", "k5e6s,k5e4s,k5e4s,k3e3s", "k5e4s,k3e6s", "k5e6s,k5e6s,k5e6s,k5e3s",
        "k5e6s,k5e6s,k5e6s,k3e6s")),
    "hardcorenas_f": Variant(MobileNetV3, arch=_arch(
        "k5e3s,k5e3s", "k5e6s,k5e6s", "k5e6s,k5e6s,k3e3s,k3e3s", "k3e6s,k5e6s,k5e6s,k3e3s",
        "k5e6s,k5e6s,k3e6s,k3e6s")),
}

register_family("hardcorenas", VARIANTS)
