"""Training defaults (issue 20): what is inferred from the data, the LR range test, the one-cycle
schedule, the frozen-head warm-up and recipe.json. Tiny models and a few batches only."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from test_train import digits_dir as digits8, one_thread  # noqa: F401  (fixtures: 8-px digits, 8 per class; 1 thread)

from visionzoo.train.defaults import (augment_strength, augmentation, auto_layer_decay, eval_crop_pct,
                                      head_warmup_steps, infer_img_size, inspect_images)
from visionzoo.train.lr_finder import lr_range_test, plot_lr_finder, suggest_lr
from visionzoo.train.scheduler import Scheduler

MODEL = "tinynet_defaults_test"


class _TinyNet(nn.Module):
    """Conv-BN-ReLU x2, pooled, linear head: enough to learn digits a little in a few steps."""

    def __init__(self, *, num_classes: int = 10, in_chans: int = 3, **_: object) -> None:
        super().__init__()
        self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, 16
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.stages = nn.Sequential(nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                                  nn.ReLU()))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))

    def get_classifier(self) -> nn.Module:
        return self.fc


@pytest.fixture(scope="module")
def tiny_model() -> str:
    from visionzoo.registry import is_model, register_model

    def tinynet_defaults_test(pretrained: bool = False, **kwargs: object) -> nn.Module:
        return _TinyNet(**kwargs)

    if not is_model(MODEL):
        register_model(tinynet_defaults_test, name=MODEL, module="tinynet_defaults_test")
    return MODEL


# ----------------------------------------------------------------------------------------------
# rules

def test_img_size_follows_the_images_within_the_model_size():
    assert infer_img_size(8, 224) == 32  # at least 32
    assert infer_img_size(32, 224) == 32
    assert infer_img_size(100, 224) == 96  # nearest multiple of 32
    assert infer_img_size(500, 224) == 224  # capped at the model's size
    assert infer_img_size(300, 256) == 256
    # pretrained weights: at least 0.4 of their size, rounded up to a multiple of 32
    assert infer_img_size(32, 224, pretrained=True) == 96 and infer_img_size(8, 384, pretrained=True) == 160
    assert infer_img_size(32, 64, pretrained=True) == 32
    assert infer_img_size(160, 224, pretrained=True) == 160


def test_augmentation_gentle_for_small_images_and_sets():
    small, large = augment_strength(32, 1400), augment_strength(224, 100_000)
    assert small < 0.1 and large == 1.0
    assert augment_strength(64, 1400) > small and augment_strength(32, 20_000) > small
    a0, a1 = augmentation(small), augmentation(large)
    assert a0["scale"][0] > 0.65 and a0["hflip"] == 0.0 and a0["ratio"][1] < 1.12
    assert a1["scale"] == (0.08, 1.0) and a1["hflip"] == 0.5 and math.isclose(a1["ratio"][1], 4 / 3, rel_tol=1e-3)


def test_eval_crop_matches_the_mean_training_crop():
    assert eval_crop_pct((1.0, 1.0)) == 1.0 and eval_crop_pct((0.7, 1.0)) == round(math.sqrt(0.85), 3)
    assert math.isclose(eval_crop_pct((0.08, 1.0)), 0.735, abs_tol=1e-3)


def test_auto_layer_decay_sets_the_first_layers_share():
    for n in (4, 18, 30):
        d = auto_layer_decay(n)
        assert math.isclose(d ** (n - 1), 0.3, rel_tol=1e-4)
        assert math.isclose(auto_layer_decay(n, 0.1) ** (n - 1), 0.1, rel_tol=1e-4)
    assert auto_layer_decay(1) == 1.0
    assert head_warmup_steps(43) == 43 and head_warmup_steps(5000) == 100


def test_inspect_images_grayscale_and_median_size(tmp_path):
    paths = []
    for i, (w, h) in enumerate([(30, 40), (32, 32), (64, 20)]):
        p = tmp_path / f"g{i}.png"
        Image.fromarray(np.full((h, w), 40 * i, np.uint8), mode="L").save(p)
        paths.append(p)
    rgb_gray = tmp_path / "rg.jpg"  # gray content saved as RGB JPEG still counts as grayscale
    Image.fromarray(np.repeat(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32, 1) % 200, 3, 2)).save(rgb_gray)
    st = inspect_images(paths + [rgb_gray])
    assert st.grayscale and st.count == 4 and st.median_short_side == 31.0
    colour = tmp_path / "c.png"
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[..., 0] = 255
    Image.fromarray(arr).save(colour)
    assert not inspect_images(paths + [colour]).grayscale


# ----------------------------------------------------------------------------------------------
# LR range test

def test_suggest_lr_is_a_tenth_of_the_minimum():
    lrs = [1e-6 * 10 ** (k / 10) for k in range(61)]  # 1e-6 .. 1
    loss = [2.0 - 1.5 * math.exp(-((math.log10(lr) + 2) ** 2)) for lr in lrs]  # valley at 1e-2
    sug, lr_min, steep = suggest_lr(lrs, loss)
    assert math.isclose(lr_min, 1e-2, rel_tol=1e-6) and math.isclose(sug, 1e-3, rel_tol=1e-6)
    assert 1e-4 < steep < 1e-2


def test_lr_range_test_restores_weights_and_optimizer(tmp_path):
    torch.manual_seed(0)
    model = _TinyNet(num_classes=3, in_chans=1)
    x = torch.randn(96, 1, 16, 16)
    y = (x.mean((1, 2, 3)) > 0).long() + (x[:, :, :8].mean((1, 2, 3)) > 0.2).long()
    loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 96, 16)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in opt.param_groups:
        p["lr_scale"] = 1.0
    before = copy.deepcopy(model.state_dict())
    res = lr_range_test(model, loader, opt, nn.CrossEntropyLoss(), torch.device("cpu"), num_steps=40)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert not opt.state and opt.param_groups[0]["lr"] == 1e-3
    assert 1e-5 < res.suggestion < 1.0 and len(res.lrs) == len(res.losses) >= 10
    assert res.lrs == sorted(res.lrs) and res.lrs[0] == 1e-5
    png = plot_lr_finder(res, tmp_path / "lr.png")
    assert png is None or png.stat().st_size > 1000


# ----------------------------------------------------------------------------------------------
# schedule

def test_onecycle_rises_then_falls():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = Scheduler(opt, 1.0, 100, 10, "onecycle", warmup_steps=25, warmup_lr_factor=0.04, min_lr=0.0)
    lrs = [s.lr_at(i) for i in range(101)]
    assert math.isclose(lrs[0], 0.04) and lrs[25] == 1.0 and lrs[100] < 1e-12
    assert all(a < b for a, b in zip(lrs[:25], lrs[1:26]))  # rising over the warmup
    assert all(a >= b for a, b in zip(lrs[25:], lrs[26:]))  # then falling
    assert math.isclose(lrs[12], 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * 12 / 25)))


# ----------------------------------------------------------------------------------------------
# whole runs

def test_train_infers_and_writes_recipe(tmp_path, tiny_model, digits8, capsys):
    from visionzoo.train.engine import TrainConfig, train

    out = tmp_path / "run"
    res = train(TrainConfig(model=tiny_model, data=str(digits8), epochs=1, batch_size=16, workers=0,
                            lr_finder_steps=12, output=str(out), progress=False))
    log = capsys.readouterr().out
    assert "inferred: num_classes 10 (class folders); in_chans 1 (grayscale images); img_size 32" in log
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe == res["recipe"]
    assert recipe["num_classes"] == 10 and recipe["in_chans"] == 1 and recipe["img_size"] == 32
    assert recipe["lr_source"] == "lr range test" and 1e-6 <= recipe["lr"] <= 1.0
    assert recipe["lr_finder"]["steps"] >= 3 and recipe["sched"] == "onecycle"
    assert recipe["augmentation"]["hflip"] == 0.0 and recipe["augmentation"]["scale"][0] > 0.65
    assert recipe["data_config"]["crop_pct"] == eval_crop_pct(recipe["augmentation"]["scale"])
    assert 0.9 < recipe["data_config"]["crop_pct"] < 0.95 and recipe["head_warmup_steps"] == 0
    assert (out / "lr_finder.csv").is_file() and (out / "metrics.csv").is_file()
    assert recipe["warmup_steps"] == max(1, round(0.25 * recipe["steps_per_epoch"]))
    # resuming reuses the recorded lr (no second range test)
    res2 = train(TrainConfig(model=tiny_model, data=str(digits8), epochs=2, batch_size=16, workers=0,
                             resume=str(out / "last.pth"), progress=False))
    assert res2["recipe"]["lr"] == recipe["lr"] and res2["recipe"]["lr_source"] == "checkpoint"


def test_explicit_lr_and_head_warmup(tmp_path, tiny_model, digits8, capsys):
    from visionzoo.train.engine import TrainConfig, train

    out = tmp_path / "run"
    res = train(TrainConfig(model=tiny_model, data=str(digits8), epochs=1, batch_size=16, workers=0, lr=2e-3,
                            head_warmup=0.5, img_size=16, in_chans=3, output=str(out), progress=False))
    log = capsys.readouterr().out
    recipe = res["recipe"]
    steps = round(0.5 * recipe["steps_per_epoch"])
    assert f"head warm-up: {steps} steps, backbone frozen" in log
    inferred = next(line for line in log.splitlines() if line.startswith("inferred:"))
    assert "in_chans" not in inferred and "img_size" not in inferred and "lr " not in inferred
    assert recipe["lr"] == 2e-3 and recipe["lr_source"] == "--lr" and "lr_finder" not in recipe
    assert recipe["in_chans"] == 3 and recipe["img_size"] == 16 and recipe["head_warmup_steps"] == steps
    assert not (out / "lr_finder.png").exists()


def test_pretrained_gets_layer_decay(tiny_model):
    from visionzoo.train.engine import TrainConfig, _resolve_layer_decay
    from visionzoo.train.optim import param_layer_ids

    model = _TinyNet(num_classes=4, in_chans=1)
    recipe: dict = {}
    d = _resolve_layer_decay(TrainConfig(model=tiny_model, pretrained=True), model, recipe)
    n = param_layer_ids(model)[1]
    assert d is not None and n >= 3 and math.isclose(d ** (n - 1), 0.3, rel_tol=1e-4)
    assert recipe["layer_decay"] == d
    assert _resolve_layer_decay(TrainConfig(model=tiny_model), model, {}) is None
    assert _resolve_layer_decay(TrainConfig(model=tiny_model, pretrained=True, layer_decay=1.0), model, {}) is None


def test_cli_lr_auto_by_default():
    import argparse

    from visionzoo.cli.train import _lr_choice, add_train_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_train_arguments(p)
    cfg = config_from_args(p.parse_args(["--model", "resnet18", "--data", "d"]))
    assert cfg.lr == "auto" and cfg.sched == "onecycle" and cfg.warmup is None and cfg.img_size is None
    assert cfg.scale is None and cfg.hflip is None and cfg.in_chans is None and cfg.label_smoothing == 0.1
    assert config_from_args(p.parse_args(["--model", "m", "--lr", "3e-3"])).lr == 3e-3
    assert _lr_choice("AUTO") == "auto"
    for bad in ("fast", "0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            _lr_choice(bad)
