"""End-to-end tests of `visionzoo benchmark` / `visionzoo select` and the API under them.

Tiny models registered here (a few thousand parameters, 32 px inputs), one thread and minimal
timing keep the whole file fast on a loaded 2-core machine.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import visionzoo
from visionzoo.bench.counting import PeakMemoryTracker, count_macs
from visionzoo.cli.main import main
from visionzoo.registry import is_model, register_model

TINY = {"benchtiny_a": 4, "benchtiny_b": 8, "benchtiny_c": 16}  # name -> width
FAST = ["--threads", "1", "--warmup", "1", "--repeats", "2", "--min-time", "0", "--no-progress"]


class _Tiny(nn.Module):
    def __init__(self, width: int, num_classes: int = 10, **kwargs) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = width
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)
        self.pretrained_cfg = visionzoo.PretrainedCfg(input_size=(3, 32, 32))
        self.feature_info = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(autouse=True, scope="module")
def _tiny_models():
    """Register the tiny models for this module's tests only: registered at import time they
    would be collected by the every-architecture tests of other modules (same xdist worker)."""
    from visionzoo import registry

    for name, width in TINY.items():
        if not is_model(name):
            register_model(lambda pretrained=False, _w=width, **kw: _Tiny(_w, **kw), name=name, module="benchtiny",
                           pretrained_cfgs={"t_in1k": {"input_size": (3, 32, 32), "num_classes": 10}})
    yield
    for name in TINY:
        registry._entrypoints.pop(name, None)
        registry._model_module.pop(name, None)
        registry._runtime_cfgs.pop(name, None)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def reference(tmp_path) -> Path:
    """A published-results table for the tiny models (+ one architecture visionzoo lacks)."""
    d = tmp_path / "ref"
    d.mkdir()
    rows = [("benchtiny_c.t_in1k", 32, 60.0, 0.0006), ("benchtiny_b.t_in1k", 32, 50.0, 0.0003),
            ("benchtiny_a.t_in1k", 32, 40.0, 0.0002), ("benchtiny_a.t_in1k", 64, 45.0, 0.0002),
            ("notimplemented_net.x_in1k", 32, 70.0, 1.0)]
    with open(d / "results-imagenet.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "img_size", "top1", "top5", "param_count", "crop_pct", "interpolation"])
        for m, s, t, p in rows:
            w.writerow([m, s, t, t + 20, p, 0.9, "bicubic"])
    return d


def test_count_macs_exact_for_conv_and_linear():
    m = _Tiny(8)
    n = count_macs(m, torch.randn(1, 3, 32, 32))
    conv = 8 * 3 * 3 * 3 * 32 * 32
    assert n["macs"] == conv + 8 * 10
    assert n["acts"] == 8 * 32 * 32 + 10
    assert n["params"] == sum(p.numel() for p in m.parameters())


def test_count_macs_on_meta_matches_cpu():
    with torch.device("meta"):
        meta = count_macs(_Tiny(4), torch.randn(1, 3, 32, 32))
    assert meta == count_macs(_Tiny(4), torch.randn(1, 3, 32, 32))


def test_peak_memory_tracker_counts_live_tensors():
    tracker = PeakMemoryTracker()
    x = torch.zeros(1024)  # 4 KiB, existing before the block
    tracker.track(x)
    with tracker:
        a = x + 1  # +4 KiB
        del a  # freed
        b = torch.ones(2048)  # +8 KiB
        c = b * 2  # +8 KiB
    assert tracker.peak == 4096 + 8192 * 2
    assert tracker.current == 4096 + 8192 * 2
    del b, c
    # a training step: the peak includes params, grads and saved activations
    m = _Tiny(8)
    t = PeakMemoryTracker()
    inp = torch.randn(4, 3, 32, 32)
    t.track(list(m.parameters()) + [inp])
    with t:
        m(inp).sum().backward()
    params = sum(p.numel() * 4 for p in m.parameters())
    assert t.peak > 2 * params + inp.numel() * 4 + 4 * 8 * 32 * 32 * 4


def test_benchmark_cli_csv_json_and_cache(tmp_path, capsys):
    out = tmp_path / "r.csv"
    rc = main(["benchmark", "benchtiny_*", "--batch-size", "2", "--img-size", "32", "--out", str(out), *FAST])
    assert rc == 0
    text = capsys.readouterr().out
    assert "benchtiny_a" in text and "benchtiny_c" in text and "train MiB" in text
    rows = list(csv.DictReader(open(out)))
    assert [r["model"] for r in rows] == ["benchtiny_a", "benchtiny_b", "benchtiny_c"]
    r = rows[0]
    assert int(r["params"]) > 0 and float(r["gmacs"]) > 0 and float(r["macts"]) > 0
    assert float(r["infer_step_ms"]) > 0 and float(r["infer_samples_per_sec"]) > 0 and int(r["infer_runs"]) >= 2
    assert float(r["train_step_ms"]) > 0 and float(r["train_peak_mem_mib"]) > 0
    assert r["train_mem_method"] == "live-tensor-peak" and r["threads"] == "1" and r["img_size"] == "32"
    # appending to the same file keeps earlier rows; JSON output is a valid list after each model
    assert main(["benchmark", "benchtiny_a", "--mode", "infer", "--out", str(out), *FAST]) == 0
    assert len(list(csv.DictReader(open(out)))) == 4
    js = tmp_path / "r.json"
    assert main(["benchmark", "benchtiny_a", "benchtiny_b", "--mode", "train", "--out", str(js), *FAST]) == 0
    data = json.loads(js.read_text())
    assert len(data) == 2 and data[0]["infer_step_ms"] is None and data[0]["train_step_ms"] > 0
    # measurements are cached and shown by `visionzoo info`
    capsys.readouterr()
    assert main(["info", "benchtiny_a", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert any(k.startswith("train bs=2") for k in info["measured"])
    assert any(k.startswith("infer bs=1") for k in info["measured"])


def test_benchmark_api_bfloat16_channels_last_and_interrupt(tmp_path, monkeypatch):
    recs = visionzoo.benchmark(["benchtiny_b"], dtype="bfloat16", channels_last=True, threads=1, warmup=0,
                               repeats=1, min_time=0, progress=False, cache=False)
    assert recs[0]["dtype"] == "bfloat16" and recs[0]["channels_last"] and not recs[0].get("error")
    assert recs[0]["infer_step_ms"] > 0 and recs[0]["train_step_ms"] > 0

    # Ctrl-C after the first model: its result is kept in the file and returned
    from visionzoo.bench import measure

    real = measure.measure_model
    calls = []

    def flaky(name, cfg=None, **kw):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(name, cfg, **kw)

    monkeypatch.setattr(measure, "measure_model", flaky)
    out = tmp_path / "part.jsonl"
    rc = main(["benchmark", "benchtiny_a", "benchtiny_b", "benchtiny_c", "--mode", "infer", "--out", str(out), *FAST])
    assert rc == 130
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["model"] == "benchtiny_a"


def test_benchmark_bad_input(capsys):
    assert main(["benchmark", "resnt50"]) == 1
    assert "Did you mean" in capsys.readouterr().err
    assert main(["benchmark", "zzznothing*"]) == 1
    assert "matches no model" in capsys.readouterr().err
    assert main(["benchmark", "benchtiny_a", "--out", "x.txt"]) == 1
    assert "--out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="mode"):
        visionzoo.benchmark("benchtiny_a", mode="fast")


def test_optimize_flag(monkeypatch, capsys):
    from visionzoo.bench import measure

    seen = {}

    def fake_optimize(model, *, example=None, dtype=None):
        seen.update(example=tuple(example.shape), dtype=dtype)
        model.report = {"folded_bn": 1}
        return model

    kw = dict(mode="infer", optimize=True, threads=1, warmup=0, repeats=1, min_time=0, progress=False, cache=False)
    monkeypatch.setattr(measure, "_optimizer_fn", lambda: fake_optimize)
    rec = visionzoo.benchmark("benchtiny_a", **kw)[0]
    assert rec["optimized"] and "folded_bn=1" in rec["note"] and seen == {"example": (1, 3, 32, 32), "dtype": "float32"}
    # without visionzoo.inference the flag is skipped with a message, not an error
    monkeypatch.setattr(measure, "_optimizer_fn", lambda: None)
    rec = visionzoo.benchmark("benchtiny_a", **kw)[0]
    assert not rec["optimized"] and not rec.get("error") and "--optimize skipped" in capsys.readouterr().err


def test_select_cli_end_to_end(tmp_path, reference, capsys):
    png, svg, out = tmp_path / "front.png", tmp_path / "front.svg", tmp_path / "cands.csv"
    args = ["select", "--reference", str(reference), "--img-size", "32", "--max-train-memory-gb", "1",
            "--train-batch-size", "2", "--plot", str(png), "--out", str(out), *FAST]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "3 models meet the limits" in text
    assert text.index("benchtiny_c.t_in1k") < text.index("benchtiny_b.t_in1k")  # ranked by accuracy
    assert "Pareto front" in text and "notimplemented_net.x_in1k" in text and "not implemented" in text
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    cands = {r["model"]: r for r in csv.DictReader(open(out))}
    assert cands["benchtiny_c.t_in1k"]["status"] == "ok" and float(cands["benchtiny_c.t_in1k"]["train_peak_mem_mib"]) > 0
    assert cands["notimplemented_net.x_in1k"]["implemented"] == "False"
    # second run: everything comes from the cache, nothing is measured again; SVG output
    assert main(args[:9] + ["--plot", str(svg), "--no-run", "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "0 benchmarks run now" in text and "3 models meet the limits" in text
    assert svg.read_text().lstrip().startswith("<?xml")
    # an impossible memory limit rejects every model, with the reason
    assert main(args[:9] + ["--max-train-memory-gb", "0.00001", "--no-run", "--threads", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "no implemented model meets the limits" in text and "GiB >" in text


def test_select_api_front_and_limits(reference):
    sel = visionzoo.select(reference=reference, img_size=32, max_latency_ms=1e6, threads=1, warmup=0, repeats=1,
                           min_time=0, progress=False, cost="gmacs")
    assert [c.arch for c in sel.ranked] == ["benchtiny_c", "benchtiny_b", "benchtiny_a"]
    # more accurate = more GMACs here, so every model is on the GMACs front
    assert [c.arch for c in sel.front] == ["benchtiny_a", "benchtiny_b", "benchtiny_c"]
    assert [c.name for c in sel.not_implemented] == ["notimplemented_net.x_in1k"]
    assert sel.chart().count("*") >= 3
    sel = visionzoo.select(reference=reference, img_size=32, max_gmacs=0.00015, threads=1, progress=False, run=False)
    assert [c.arch for c in sel.ranked] == ["benchtiny_a"]
    assert all("GMACs >" in c.reasons[0] for c in sel.rejected)
    # the min of the timed runs instead of the median, from the cache alone
    sel = visionzoo.select(reference=reference, img_size=32, threads=1, progress=False, run=False, timing="min")
    assert sel.cost_key == "infer_step_ms_min" and len(sel.ranked) == 3 and sel.front
    assert all(c.value("infer_step_ms_min") <= c.value("infer_step_ms") for c in sel.ranked)
    assert "times: min" in sel.report()
    # without --img-size each architecture is taken at its best published size
    sel = visionzoo.select(reference=reference, models=["benchtiny_a"], threads=1, warmup=0, repeats=1, min_time=0,
                           progress=False)
    assert sel.ranked[0].row.img_size == 64 and sel.ranked[0].measured["img_size"] == 64


def test_select_uses_given_measurements_with_shipped_reference(tmp_path, capsys):
    """Shipped ImageNet results joined with a results file; nothing is run (--no-run)."""
    from visionzoo.bench.results import ResultWriter

    path = tmp_path / "m.csv"
    w = ResultWriter(path)
    for name, ms in (("test_resnet", 5.0), ("test_convnext", 3.0), ("test_vit", 50.0)):
        w.write(dict(model=name, img_size=160, params=400000, gmacs=0.05, infer_batch_size=1, infer_step_ms=ms,
                     infer_samples_per_sec=1000 / ms, device="cpu", threads=2, dtype="float32", host="elsewhere"))
    assert main(["select", "--models", "test_*", "--img-size", "160", "--max-latency-ms", "10", "--threads", "2",
                 "--measurements", str(path), "--no-run", "--no-progress", "--robustness"]) == 0
    text = capsys.readouterr().out
    assert "test_convnext.r160_in1k" in text and "latency 50.0 ms > 10.0" in text
    assert "real" in text.splitlines()[4]  # robustness columns in the header
    assert "measuring is off" in text  # the other test models had no measurement


def test_select_optimize_ranks_by_optimized_latency(tmp_path, capsys):
    """--optimize reads the optimized inference records; training figures still come from the plain model."""
    from visionzoo.bench.results import ResultWriter

    path = tmp_path / "m.csv"
    w = ResultWriter(path)
    base = dict(img_size=160, params=400000, gmacs=0.05, infer_batch_size=1, device="cpu", threads=2,
                dtype="float32", host="elsewhere")
    # eager: resnet fast, vit slow; optimized: the other way round
    for name, eager, opt in (("test_resnet", 5.0, 4.0), ("test_vit", 50.0, 8.0)):
        w.write(dict(model=name, infer_step_ms=eager, optimized=False, train_batch_size=32, train_step_ms=90.0,
                     train_peak_mem_mib=100.0, **base))
        w.write(dict(model=name, infer_step_ms=opt, optimized=True, **base))
    args = ["select", "--models", "test_resnet", "test_vit", "--img-size", "160", "--max-latency-ms", "10",
            "--threads", "2", "--measurements", str(path), "--no-run", "--no-progress", "--json"]
    assert main(args) == 0
    plain = {r["model"].split(".")[0]: r for r in json.loads(capsys.readouterr().out)}
    assert plain["test_resnet"]["status"] == "ok" and plain["test_vit"]["status"] == "rejected"
    assert main(args + ["--optimize", "--max-train-memory-gb", "1"]) == 0
    opt = {r["model"].split(".")[0]: r for r in json.loads(capsys.readouterr().out)}
    assert opt["test_vit"]["status"] == "ok" and opt["test_vit"]["infer_step_ms"] == 8.0
    assert opt["test_resnet"]["infer_step_ms"] == 4.0 and opt["test_vit"]["train_peak_mem_mib"] == 100.0
    sel = visionzoo.select(models=["test_vit"], img_size=160, threads=2, measurements=[path], run=False,
                           progress=False, optimize=True)
    assert "optimized" in sel.report().splitlines()[0]


def test_select_bad_input(reference, capsys):
    assert main(["select", "--reference", str(reference), "--img-size", "31"]) == 1
    assert "no published result at img_size 31" in capsys.readouterr().err
    assert main(["select", "--reference", str(reference), "--models", "zzz*"]) == 1
    assert "matches no published result" in capsys.readouterr().err
    assert main(["select", "--max-latency-ms", "-1"]) == 1
    with pytest.raises(ValueError, match="cost"):
        visionzoo.select(cost="speed")
