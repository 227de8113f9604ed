"""Export (ONNX / TorchScript / torch.export) parity and the optimize() path, one model per family.

Families are read from ``visionzoo.list_modules()`` at collection time, so a family that lands
is checked without editing this file: it gets its entry in ``REPS`` (a small arch, a small input,
shrinking kwargs) or, failing that, its smallest fixture architecture at its default size.
Families that cannot be scripted are listed in ``SCRIPT_XFAIL`` with the reason; they are
expected failures that must fail with an ``ExportError`` (a parity failure still fails).
"""
from __future__ import annotations

import json
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import visionzoo
from visionzoo.export import ExportError, export_model, load_exported, run_exported
from visionzoo.inference import (OptimizedModel, bf16_close, bf16_supported, compile_available, example_input,
                                 fold_batchnorm, optimize)
import fixture_data

FIXTURES = Path(__file__).parent / "fixtures"

# family -> (arch, img_size, model kwargs): the smallest arch, shrunk where the family allows it
REPS: dict[str, tuple[str, int | None, dict[str, Any]]] = {
    # issue 16/17/19 families: small configs of the default archs keep each export check short
    "maxxvit": ("test_maxvit", 64, dict(img_size=64)),  # geometry fixed at build: window/grid path at 64 px
    "focalnet": ("focalnet_tiny_srf", 64, dict(depths=(1, 1, 1, 1))),
    "davit": ("davit_tiny", 64, dict(depths=(1, 1, 1, 1), window_size=4)),
    "gcvit": ("gcvit_xxtiny", 64, dict(depths=(1, 2, 1, 1))),
    "efficientvim": ("efficientvim_m1", 128, {}),
    "iformer": ("iformer_t", 128, {}),
    "crossvit": ("crossvit_tiny_240", 120, dict(depth=((1, 2, 0),) * 3)),
    "volo": ("volo_d1_224", 64, dict(layers=(1, 1, 1, 1))),
    "tnt": ("tnt_s_patch16_224", 64, dict(depth=2)),
    "xcit": ("xcit_nano_12_p16_224", 64, dict(depth=2)),
    "convit": ("convit_tiny", 64, dict(depth=4, local_up_to_layer=2)),
    "pit": ("pit_ti_distilled_224", 64, dict(depth=(1, 1, 1))),
    "pvt_v2": ("pvt_v2_b0", 64, dict(depths=(1, 1, 1, 1))),
    "twins": ("twins_svt_small", 64, dict(depths=(2, 2, 2, 2))),
    "sequencer": ("sequencer2d_s", 56, dict(layers=(1, 1, 1, 1))),
    "nextvit": ("nextvit_small", 64, dict(depths=(1, 1, 5, 1))),
    "mvitv2": ("mvitv2_tiny", 64, dict(img_size=64, depths=(1, 1, 1, 1))),
    "nest": ("nest_tiny", 64, dict(img_size=64, depths=(1, 1, 1))),
    "metaformer": ("caformer_s18", 64, dict(depths=(1, 1, 1, 1))),
    "repvit": ("repvit_m0_9", 64, dict(depths=(1, 1, 1, 1))),
    "rdnet": ("rdnet_tiny", 64, dict(growth_rates=(32, 32, 32, 32, 32, 32, 32), num_blocks=1)),
    "shvit": ("shvit_s1", 64, {}),
    "beit": ("beit_base_patch16_224", 64, dict(depth=2)),
    "coat": ("coat_tiny", 64, dict(serial_depths=(1, 1, 1, 1), parallel_depth=1)),
    "gemma4_vit": ("gemma4_vit_167m", 96, dict(depth=2, embed_dim=64, num_heads=2, mlp_hidden=128)),
    "cpubone": ("cpubone_nano", 128, dict(depths=(0, 1, 1, 1, 1))),  # sizes: multiples of 32
    "lowformer": ("lowformer_b0", 64, dict(depths=(0, 0, 0, 1, 1))),
    "mobilenetv5": ("mobilenetv5_base", 128, {}),
    # the one-architecture classic nets are large at 299-331 px: export them at 96 px (VALID stems need >= 75)
    "inception_v3": ("inception_v3", 96, {}),
    "inception_v4": ("inception_v4", 96, {}),
    "inception_resnet_v2": ("inception_resnet_v2", 96, {}),
    "nasnet": ("nasnetalarge", 96, {}),
    "pnasnet": ("pnasnet5large", 96, {}),
    "xception": ("legacy_xception", 96, {}),
    "byoanet": ("halonet26t", 64, {}),  # halonet_h1 (smallest) is ill-conditioned at random init
    "convnext": ("test_convnext", 64, {}),
    "deit": ("deit_tiny_distilled_patch16_224", 64, dict(depth=2)),
    "deepseek_vit": ("deepseek_vit_412m_align", 56, dict(depth=2, aligner_dim=64)),  # 412M: 2 blocks, small aligner
    "densenet": ("densenet121", 64, dict(block_config=(2, 2, 2, 2))),
    "efficientnet": ("test_efficientnet", 64, {}),
    "eva": ("eva02_tiny_patch14_224", 56, dict(depth=2)),
    "mlp_mixer": ("mixer_s32_224", 64, dict(num_blocks=2)),
    "mobilenetv3": ("mobilenetv3_small_050", 64, {}),
    "naflexvit": ("naflexvit_base_patch16_gap", 64, dict(depth=2)),
    "qwen3_vit": ("qwen3_vit_88m_merge", 64, dict(depth=2)),
    "regnet": ("regnety_002", 64, {}),
    "resnet": ("test_resnet", 64, {}),
    "resnetv2": ("resnetv2_18", 64, {}),
    "swin_transformer": ("swin_tiny_patch4_window7_224", 64,
                         dict(window_size=4, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))),
    "swin_transformer_v2": ("swinv2_tiny_window8_256", 64,
                            dict(window_size=4, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))),
    "swin_transformer_v2_cr": ("swinv2_cr_tiny_224", 64,
                               dict(window_size=4, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))),
    "tiny_vit": ("tiny_vit_5m_224", 64, dict(depths=(1, 1, 2, 1))),  # 8x8 map in 14-windows: padding path
    "hiera": ("hiera_tiny_224", 64, dict(stages=(1, 1, 2, 1))),
    "hieradet_sam2": ("sam2_hiera_tiny", 128, dict(stages=(1, 1, 2, 1), global_att_blocks=(3,))),
    "vgg": ("vgg11", 64, dict(mlp_ratio=1 / 64)),
    "vision_transformer": ("test_vit", 64, {}),
    "vision_transformer_sam": ("samvit_base_patch16_224", 64, dict(depth=2, global_attn_indexes=(1,))),
    "vitamin": ("vitamin_small_224", 64, dict(depth=2)),
    "vovnet": ("ese_vovnet19b_slim_dw", 64, {}),
}

# families whose models torch.jit.script cannot compile today, and why (first blocking construct);
# every family scripts now: an entry here must name the exact construct that cannot be compiled
SCRIPT_XFAIL: dict[str, str] = {
    # families added in the 2026-12-02 wave whose blocks TorchScript does not compile yet (ONNX and
    # torch.export parity pass for them); each reason is the first compile error
    "coat": "stages addressed by index through getattr (the checkpoint's flat names patch_embed1-4, serial_blocks1-4)",
    "fasternet": "getattr with a non-literal name in the block",
    "ghostnet": "GhostModule reads an attribute it only sets in some configurations ('act')",
    "inception_next": "a module-typed parameter ('nn.Module' annotation)",
    "mambaout": "a module-typed parameter ('nn.Module' annotation)",
    "nasnet": "a set comprehension ('SetComp') in the cell trunk's level table; the trunk is a Python list of two-input cells",
    "pnasnet": "a set comprehension ('SetComp') in the cell trunk's level table; the trunk is a Python list of two-input cells",
    "naflexvit": "forward takes an image or a NaFlex patch dict (Union input; 'Unknown type constructor Sequence')",
    "qwen3_vit": "keyword-only constructor arguments with defaults in the wrapped encoder ('Compiled functions can't take variable number of arguments')",
    "repghost": "GhostBottleneck reads an attribute it only sets in some configurations ('_dw')",
}

# variants whose layers the family representatives above do not reach: (arch, img_size, model kwargs)
SCRIPT_VARIANTS: list[tuple[str, int, dict[str, Any]]] = [
    ("mixnet_s", 64, {}),  # MixedConv2d
    ("tf_efficientnet_cc_b0_4e", 63, {}),  # CondConv2d, TF-same padding
    ("efficientnet_x_b3", 64, {}),  # space-to-depth, edge residuals
    ("efficientnet_b0", 64, dict(memory_efficient=True)),  # fused BN-act autograd function, recompute
    ("mobilenetv4_hybrid_medium", 64, {}),  # mobile multi-query attention
    ("densenet121", 64, dict(block_config=(2, 2, 2, 2), memory_efficient=True)),
    ("vit_small_patch16_18x2_224", 64, dict(depth=2)),  # parallel blocks
    ("vit_dpwee_patch16_reg1_gap_256", 64, dict(depth=2)),  # differential attention, register token
    ("vit_base_patch16_siglip_224", 64, dict(depth=2)),  # attention-pool (MAP) head
]


@lru_cache(maxsize=None)
def _fixture_smallest(family: str) -> str | None:
    recs = [r for r in fixture_data.records(family) if "error" not in r and "num_params" in r]
    return min(recs, key=lambda r: r["num_params"])["name"] if recs else None


def _rep(family: str) -> tuple[str, int | None, dict[str, Any]]:
    if family in REPS and visionzoo.is_model(REPS[family][0]):
        return REPS[family]
    names = visionzoo.list_models(module=family)
    smallest = _fixture_smallest(family)
    return (smallest if smallest in names else names[0]), None, {}


FAMILIES = visionzoo.list_modules()

# CI export budget. The ONNX exporter (torch.export, then the ONNX rewrite, then ONNX Runtime)
# costs 5-45 s per family on 2 cores, ~20 minutes for all: CI exports to ONNX the families below,
# chosen to cover distinct graph constructs (convs/BN/SE, window partition and shifted masks,
# relative-position biases, RoPE, linear and cross-covariance attention, unfold/fold, LSTMs,
# NaFlex patch dicts, concatenating trunks, token pooling), and checks torch.export parity
# (the first half of the same exporter) for every other family; TorchScript with the export flags
# (``scriptable=True``) for the same budgeted set, with default flags for all. Everything:
#   VISIONZOO_EXPORT=full python3 -m pytest tests/test_export.py -n 2
FULL_EXPORT = os.environ.get("VISIONZOO_EXPORT", "").lower() == "full"
ONNX_CI = frozenset({
    "resnet", "efficientnet", "mobilenetv3", "regnet", "densenet", "nfnet", "convnext", "vision_transformer",
    "swin_transformer", "swin_transformer_v2", "eva", "beit", "maxxvit", "levit", "efficientvit_mit",
    "mobilevit", "tiny_vit", "hiera", "naflexvit", "metaformer", "xcit", "sequencer", "gemma4_vit", "lowformer",
})


def _budget_param(family: str, in_ci: bool) -> Any:
    marks = [] if FULL_EXPORT or in_ci else \
        [pytest.mark.skip(reason="outside the CI export budget (VISIONZOO_EXPORT=full)")]
    return pytest.param(family, id=family, marks=marks)


def _script_param(family: str, in_ci: bool = True) -> Any:
    marks = [pytest.mark.xfail(reason=f"not scriptable: {SCRIPT_XFAIL[family]}", raises=ExportError, strict=False)] \
        if family in SCRIPT_XFAIL else []
    if not (FULL_EXPORT or in_ci):
        marks.append(pytest.mark.skip(reason="outside the CI export budget (VISIONZOO_EXPORT=full)"))
    return pytest.param(family, id=family, marks=marks)


def _report(result) -> None:
    print(f"\n{result.summary()}")


@pytest.mark.parametrize("family", [_budget_param(f, f in ONNX_CI) for f in FAMILIES])
def test_onnx_parity(family: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    arch, size, kwargs = _rep(family)
    r = export_model(arch, "onnx", tmp_path / f"{arch}.onnx", img_size=size, model_kwargs=kwargs,
                     dynamic_batch=True, raise_on_mismatch=False)
    _report(r)
    assert r.passed, f"{arch}: max abs diff {r.max_abs_diff:.3g} > {r.tolerance:.3g}"
    assert r.checked_batch_sizes[:2] == [1, 3]  # the batch dimension is really symbolic
    import onnx

    meta = {p.key: json.loads(p.value) for p in onnx.load(str(r.path)).metadata_props}
    assert meta["visionzoo.architecture"] == arch


@pytest.mark.parametrize("family", [_script_param(f, f in ONNX_CI) for f in FAMILIES])
def test_torchscript_parity(family: str, tmp_path: Path) -> None:
    arch, size, kwargs = _rep(family)
    r = export_model(arch, "torchscript", tmp_path / f"{arch}.pt", img_size=size, model_kwargs=kwargs,
                     raise_on_mismatch=False)
    _report(r)
    assert r.passed, f"{arch}: max abs diff {r.max_abs_diff:.3g} > {r.tolerance:.3g}"


@pytest.mark.parametrize("family", [_script_param(f) for f in FAMILIES])
def test_torchscript_default_flags(family: str, tmp_path: Path) -> None:
    """A model built with default layer flags (no ``scriptable=True``) scripts with parity too."""
    model, size = _eager(family)
    r = export_model(model, "torchscript", tmp_path / f"{family}.pt", img_size=size, raise_on_mismatch=False)
    _report(r)
    assert r.passed, f"{family}: max abs diff {r.max_abs_diff:.3g} > {r.tolerance:.3g}"


@pytest.mark.parametrize("arch,size,kwargs", SCRIPT_VARIANTS, ids=[a for a, _, _ in SCRIPT_VARIANTS])
def test_torchscript_variants(arch: str, size: int, kwargs: dict[str, Any], tmp_path: Path) -> None:
    """Layer variants scripted as built with default flags (memory-efficient modes included)."""
    if not visionzoo.is_model(arch):
        pytest.skip(f"{arch} is not registered")
    if visionzoo.get_pretrained_cfg(arch).fixed_input_size:
        kwargs = dict(kwargs, img_size=size)
    torch.manual_seed(0)
    model = visionzoo.create_model(arch, **kwargs).eval()
    r = export_model(model, "torchscript", tmp_path / f"{arch}.pt", img_size=size, raise_on_mismatch=False)
    _report(r)
    assert r.passed, f"{arch}: max abs diff {r.max_abs_diff:.3g} > {r.tolerance:.3g}"


def test_scriptable_flag_drops_eager_only_memory_modes() -> None:
    """``scriptable=True`` builds without the autograd-function / checkpointing memory modes."""
    if visionzoo.is_model("test_efficientnet"):
        model = visionzoo.create_model("test_efficientnet", scriptable=True, memory_efficient=True)
        assert model.memory_efficient == "inplace"
        assert visionzoo.create_model("test_efficientnet", memory_efficient=True).memory_efficient == "block"
    if visionzoo.is_model("densenet121"):
        kw = dict(block_config=(1, 1, 1, 1), memory_efficient=True)
        dense = visionzoo.create_model("densenet121", scriptable=True, **kw)
        assert not any(getattr(m, "memory_efficient", False) for m in dense.modules())
        dense = visionzoo.create_model("densenet121", **kw)
        assert any(getattr(m, "memory_efficient", False) for m in dense.modules())


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("arch,kwargs", [
    ("test_vit", dict(dynamic_img_size=True)),
    ("deit_tiny_distilled_patch16_224", dict(depth=2, dynamic_img_size=True)),
    ("swin_tiny_patch4_window7_224", dict(img_size=64, window_size=4, embed_dim=32, depths=(2, 2, 2, 2),
                                          num_heads=(1, 2, 4, 8))),
])
def test_torchscript_other_input_sizes(arch: str, kwargs: dict[str, Any]) -> None:
    """Scripted models that resample position embeddings / rebuild shifted-window masks at run time."""
    if not visionzoo.is_model(arch):
        pytest.skip(f"{arch} is not registered")
    torch.manual_seed(0)
    model = visionzoo.create_model(arch, scriptable=True, **kwargs).eval()
    scripted = torch.jit.script(model)
    for hw in ((64, 64), (48, 80), (96, 96)) if "swin" not in arch else ((64, 64), (61, 77), (96, 96)):
        x = torch.randn(2, 3, *hw)
        with torch.inference_mode():
            ref, got = model(x), scripted(x)
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() <= 1e-5 + 1e-4 * ref.abs().max().item(), hw


@pytest.mark.parametrize("family", [_budget_param(f, f not in ONNX_CI) for f in FAMILIES])
def test_exported_program_parity(family: str, tmp_path: Path) -> None:
    arch, size, kwargs = _rep(family)
    r = export_model(arch, "exported-program", tmp_path / f"{arch}.pt2", img_size=size, model_kwargs=kwargs,
                     dynamic_batch=True, raise_on_mismatch=False)
    _report(r)
    assert r.passed, f"{arch}: max abs diff {r.max_abs_diff:.3g} > {r.tolerance:.3g}"


def _eager(family: str) -> tuple[nn.Module, int | None]:
    arch, size, kwargs = _rep(family)
    if size is not None and visionzoo.get_pretrained_cfg(arch).fixed_input_size:
        kwargs = dict(kwargs, img_size=size)
    torch.manual_seed(0)
    model = visionzoo.create_model(arch, **kwargs).eval()
    # non-trivial BatchNorm statistics, so folding mistakes cannot hide behind identity BNs
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            if m.weight is not None:
                with torch.no_grad():
                    m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model, size


@pytest.mark.parametrize("family", FAMILIES)
def test_optimize_matches_eager(family: str) -> None:
    """float32 optimize (BN folding, channels-last, fused attention) within the conformance tolerance."""
    model, size = _eager(family)
    x = example_input(model, size, batch_size=2, seed=3)
    with torch.inference_mode():
        ref = model(x)
    fast = optimize(model, backend="torch", compile=False, dtype="float32", img_size=size)
    assert isinstance(fast, OptimizedModel)
    got = fast(x)
    diff = (got.double() - ref.double()).abs().max().item()
    tol = 1e-4 * ref.abs().max().item() + 1e-5  # test_conformance's rtol
    print(f"\n{family}: optimize report {fast.report}; max abs diff {diff:.3g} (tolerance {tol:.3g})")
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert diff <= tol
    assert fast.num_classes == model.num_classes and fast.pretrained_cfg is model.pretrained_cfg


@pytest.mark.parametrize("family", [f for f in ("resnet", "vision_transformer", "efficientnet", "convnext")
                                    if f in FAMILIES])
def test_optimize_bfloat16(family: str) -> None:
    """Asked for explicitly, bfloat16 runs (and stays close) also where the CPU only emulates it."""
    model, size = _eager(family)
    x = example_input(model, size, batch_size=2, seed=3)
    with torch.inference_mode():
        ref = model(x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no native bfloat16.*")
        fast = optimize(model, compile=False, dtype="bfloat16", img_size=size)
    got = fast(x)
    ok, msg = bf16_close(got, ref)
    print(f"\n{family} bf16: {msg}")
    assert got.dtype == torch.float32 and ok, msg


@pytest.mark.parametrize("family", [f for f in ("resnet", "efficientnet", "swin_transformer") if f in FAMILIES])
def test_optimize_jit_matches_eager(family: str) -> None:
    """optimize(jit=True): per-shape traced + frozen graphs, float32 within the conformance tolerance."""
    model, size = _eager(family)
    fast = optimize(model, compile=False, dtype="float32", jit=True, img_size=size)
    for bs in (1, 2):
        x = example_input(model, size, batch_size=bs, seed=bs)
        with torch.inference_mode():
            ref = fast.model(x)  # the folded model, eager
        got = fast(x)
        assert (got - ref).abs().max().item() <= 1e-4 * ref.abs().max().item() + 1e-5
    assert fast.report["jit_traced_shapes"] == 2, fast.report.get("jit_error")


def test_optimize_defaults() -> None:
    """Default dtype: bfloat16 exactly when the CPU supports it; no compile; BN folded; idempotence guarded."""
    model = _Tricky().eval()
    fast = optimize(model, backend="torch", img_size=32)
    assert fast.report["dtype"] == ("bfloat16" if bf16_supported() else "float32")
    assert fast.report["compiled"] is False and fast.report["folded_bn"] == 4
    assert fast(torch.randn(3, 3, 32, 32)).dtype == torch.float32
    with pytest.raises(ValueError, match="already optimized"):
        optimize(fast)
    with pytest.raises(ValueError, match="unknown dtype"):
        optimize(_Tricky().eval(), dtype="int4")
    with pytest.raises(ValueError, match="needs calibration"):  # int8 exists, through ONNX Runtime
        optimize(_Tricky().eval(), dtype="int8")


@pytest.mark.skipif(not compile_available()[0], reason=f"torch.compile unavailable: {compile_available()[1]}")
def test_optimize_compiled() -> None:
    family = "resnet" if "resnet" in FAMILIES else FAMILIES[0]
    model, size = _eager(family)
    x = example_input(model, 32 if size else None, batch_size=2, seed=3)
    with torch.inference_mode():
        ref = model(x)
    fast = optimize(model, compile=True, dtype="float32", img_size=32 if size else None)
    assert fast.report["compiled"]
    got = fast(x)
    assert (got - ref).abs().max().item() <= 1e-4 * ref.abs().max().item() + 1e-5


# --- BatchNorm folding rules, on a model built to trip them up ---------------------------------


def _bn_subclasses() -> tuple[type, type]:
    from visionzoo.layers.norm_act import BatchNormAct2d

    class SameInEval(BatchNormAct2d):  # like the mobile families' norm-acts: differs only in training
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                return self.act(F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps))
            return super().forward(x)

    class Scaled(nn.BatchNorm2d):  # not a batch norm any more: must not be folded
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    return SameInEval, Scaled


class _Tricky(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from visionzoo.layers.conv_norm_act import ConvNormAct
        from visionzoo.layers.norm_act import BatchNormAct2d
        from visionzoo.layers.padding import Conv2dSame

        self.stem = ConvNormAct(3, 8, 3, stride=2)  # fold
        self.same = Conv2dSame(8, 8, 3, stride=2)  # fold (TF-same conv)
        self.bn_same = BatchNormAct2d(8)  # fold, leaves the ReLU
        self.seq = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())  # fold (conv has a bias)
        self.pre = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1))  # BN before conv: no
        self.twice = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_twice = nn.BatchNorm2d(8)  # conv output also used by the residual: no
        self.shared = nn.Conv2d(8, 8, 1)
        self.bn_a, self.bn_b = nn.BatchNorm2d(8), nn.BatchNorm2d(8)  # one conv, two BNs: no
        same_in_eval, scaled = _bn_subclasses()
        self.sub_conv, self.sub_bn = nn.Conv2d(8, 8, 1), same_in_eval(8)  # subclass equal in eval: fold
        self.odd_conv, self.odd_bn = nn.Conv2d(8, 8, 1), scaled(8)  # subclass that is not a BN: no
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_same(self.same(self.stem(x)))
        x = self.pre(self.seq(x))
        y = self.twice(x)
        x = self.bn_twice(y) + y
        x = self.bn_a(self.shared(x)) + self.bn_b(self.shared(x))
        x = self.odd_bn(self.odd_conv(self.sub_bn(self.sub_conv(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_fold_batchnorm_rules() -> None:
    torch.manual_seed(0)
    model = _Tricky()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    model.eval()
    x = torch.randn(2, 3, 33, 31)
    with torch.no_grad():
        ref = model(x)
    pairs = fold_batchnorm(model, x[:1])
    assert sorted(pairs) == sorted([("stem.conv", "stem.bn"), ("same", "bn_same"), ("seq.0", "seq.1"),
                                    ("sub_conv", "sub_bn")])
    assert isinstance(model.stem.bn, nn.Identity) and isinstance(model.bn_same, nn.ReLU)
    assert isinstance(model.sub_bn, nn.ReLU) and isinstance(model.odd_bn, nn.BatchNorm2d)
    assert isinstance(model.bn_twice, nn.BatchNorm2d) and isinstance(model.pre[0], nn.BatchNorm2d)
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() < 1e-5


def test_fold_batchnorm_needs_eval() -> None:
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(_Tricky().train(), torch.randn(1, 3, 16, 16))


# --- API details --------------------------------------------------------------------------------


def test_export_module_and_bad_format(tmp_path: Path) -> None:
    model = _Tricky().eval()
    r = export_model(model, "ep", tmp_path / "tricky", img_size=(40, 48), batch_size=2)
    assert r.path.suffix == ".pt2" and r.passed and r.input_shape == (2, 3, 40, 48)
    runner = load_exported(r.path)
    assert run_exported(runner, torch.randn(2, 3, 40, 48)).shape == (2, 5)
    with pytest.raises(ValueError, match="unknown export format"):
        export_model(model, "tflite", tmp_path / "x")
    with pytest.raises(ValueError, match="only when a model name"):
        export_model(model, "onnx", tmp_path / "x", pretrained=True)


@pytest.mark.skipif("efficientnet" not in FAMILIES or not visionzoo.is_model("tf_efficientnet_lite0"),
                    reason="efficientnet family not registered")
def test_tf_same_padding_exports(tmp_path: Path) -> None:
    """TF-'same' (dynamic padding) convolutions: scripted and exported with parity."""
    fmts = ["exported-program", "torchscript"]
    for fmt in fmts:  # odd input size: asymmetric padding
        r = export_model("tf_efficientnet_lite0", fmt, tmp_path / "a", img_size=61, raise_on_mismatch=False)
        _report(r)
        assert r.passed


def test_cli_export(tmp_path: Path, capsys) -> None:
    from visionzoo.cli.main import main

    arch, size, _ = _rep(FAMILIES[0]) if FAMILIES else ("", None, {})
    if not arch:
        pytest.skip("no family registered")
    out = tmp_path / "m.pt2"
    args = ["export", "test_resnet" if visionzoo.is_model("test_resnet") else arch, "--format", "exported-program",
            "-o", str(out), "--dynamic-batch", "--num-classes", "7"]
    if size:
        args += ["--img-size", str(size)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "parity vs eager" in text and "OK" in text and out.exists()
    assert main(["export", "no_such_model_xyz", "-f", "onnx"]) == 1
    with pytest.raises(SystemExit):
        main(["export", "resnet18", "--format", "tflite"])


def test_bf16_supported_requires_the_instructions(monkeypatch):
    """Plain AVX-512 (oneDNN emulates bf16 there, slower than fp32) is not native bf16 support."""
    import visionzoo.inference as inf

    monkeypatch.setattr(inf.platform, "machine", lambda: "x86_64")
    for bf16, amx, expected in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        inf.bf16_supported.cache_clear()
        assert inf.bf16_supported() is expected
    inf.bf16_supported.cache_clear()


def test_packed_linear_matches_linear_and_falls_back() -> None:
    from visionzoo.deploy.inference import PackedLinear, mkl_packed_linear_available, pack_linears

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 8, bias=False))
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    xs = [torch.randn(3, 24), torch.randn(2, 7, 24), torch.randn(1, 24), torch.randn(5, 24), torch.randn(6, 24),
          torch.randn(2, 5, 24)]  # 6 row counts: more than PackedLinear.max_shapes
    with torch.inference_mode():
        refs = [model(x) for x in xs]
    n = pack_linears(model)
    if not mkl_packed_linear_available():
        assert n == 0
        pytest.skip("this PyTorch build has no MKL packed GEMM")
    assert n == 2 and all(isinstance(m, PackedLinear) for m in (model[0], model[2]))
    assert model.state_dict().keys() == plain.keys()
    with torch.inference_mode():
        for x, ref in zip(xs + xs, refs + refs):  # twice: packed (cached) and plain calls
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
    assert len(model[0].__dict__["_packed"]) == PackedLinear.max_shapes
    # gradients still flow through the plain kernel
    x = torch.randn(3, 24, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and model[0].weight.grad is not None
