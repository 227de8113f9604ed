"""Training: optim/sched/EMA/mixup units, data errors, resume equivalence, kill-and-resume, 2-process torchrun.

Runs use a tiny CNN registered by this file (also from a launcher script for subprocesses) on a small
slice of scikit-learn's bundled digits at 16 px, with one torch thread, so the whole file stays
well under a few minutes on two busy cores.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from visionzoo.data.dataset import DatasetError, ImageFolder, split_samples
from visionzoo.train.checkpoint import (ResumeError, get_rng_state, load_training_checkpoint, save_checkpoint,
                                        set_rng_state)
from visionzoo.train.ema import ModelEma
from visionzoo.train.engine import TrainConfig, train
from visionzoo.train.metrics import read_csv, topk_correct
from visionzoo.train.mixup import Mixup
from visionzoo.train.optim import OPTIMIZERS, Lamb, _block_key, create_optimizer, param_groups, param_layer_ids
from visionzoo.train.scheduler import Scheduler

TINY_SRC = textwrap.dedent('''
    """A tiny CNN registered as 'tinynet_test' for training tests (any visionzoo model works the same)."""
    import os
    import time

    import torch
    import torch.nn as nn

    from visionzoo.registry import is_model, register_model


    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))


    class TinyNet(nn.Module):
        def __init__(self, *, num_classes=10, in_chans=3, drop_rate=0.0, global_pool="avg"):
            super().__init__()
            self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, 16
            self.stem = Block(in_chans, 8, 2)
            self.stages = nn.Sequential(Block(8, 16, 2), Block(16, 16, 1))
            self.drop = nn.Dropout(drop_rate)
            self.fc = nn.Linear(16, num_classes) if num_classes else nn.Identity()
            self.grad_checkpointing = False

        def forward_features(self, x):
            x = self.stem(x)
            if self.grad_checkpointing and self.training:
                from visionzoo.layers.grad_checkpoint import checkpoint_seq
                return checkpoint_seq(self.stages, x)
            return self.stages(x)

        def forward_head(self, x, pre_logits=False):
            x = self.drop(x.mean((2, 3)))
            return x if pre_logits else self.fc(x)

        def forward(self, x):
            if os.environ.get("TINYNET_SLEEP"):
                time.sleep(float(os.environ["TINYNET_SLEEP"]))
            return self.forward_head(self.forward_features(x))

        def get_classifier(self):
            return self.fc

        def reset_classifier(self, num_classes, global_pool=None):
            self.num_classes = num_classes
            self.fc = nn.Linear(16, num_classes) if num_classes else nn.Identity()

        def set_grad_checkpointing(self, enable=True):
            self.grad_checkpointing = enable


    def tinynet_test(pretrained=False, **kwargs):
        if pretrained:
            raise ValueError("tinynet_test has no pretrained weights")
        return TinyNet(**kwargs)


    if not is_model("tinynet_test"):
        register_model(tinynet_test, name="tinynet_test", module="tinynet_test")
''')

LAUNCHER_SRC = textwrap.dedent('''
    import faulthandler
    import os
    import sys

    if os.environ.get("VZ_WATCHDOG_S"):  # a hung process prints every thread's stack, then exits
        faulthandler.dump_traceback_later(float(os.environ["VZ_WATCHDOG_S"]), exit=True)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tinynet_mod  # noqa: F401  (registers tinynet_test)
    from visionzoo.cli.main import main

    if __name__ == "__main__":  # not when a forkserver / spawn worker imports the main module
        sys.exit(main())
''')

MODEL = "tinynet_test"
BASE = ["--model", MODEL, "--in-chans", "1", "--img-size", "16", "--batch-size", "16", "--hflip", "0",
        "--scale", "0.6", "1.0", "--lr", "3e-3", "--warmup", "0.5", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the tiny model module and the launcher script (importable in-process too)."""
    d = tmp_path_factory.mktemp("tinynet")
    (d / "tinynet_mod.py").write_text(TINY_SRC)
    (d / "launch.py").write_text(LAUNCHER_SRC)
    sys.path.insert(0, str(d))
    import tinynet_mod  # noqa: F401

    return d


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn")
    from visionzoo.data.dataset import write_digits_folder

    return write_digits_folder(tmp_path_factory.mktemp("data") / "digits", val_fraction=0.25, limit_per_class=8)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: fastest for these tiny models on a busy machine, and equal to the subprocesses'."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cli(argv: list[str]) -> int:
    from visionzoo.cli.main import main

    return main(argv)


def _metrics(path: Path) -> list[dict[str, str]]:
    """The metrics CSV as written (strings), without the wall-clock column."""
    import csv

    with open(path, encoding="utf-8") as f:
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in csv.DictReader(f)]


def _sub_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("TINYNET_SLEEP", None)
    return env


# ----------------------------------------------------------------------------------------------
# units

def test_block_keys_cover_common_layouts():
    cases = {
        "conv1.0.weight": None, "stem.0.weight": None, "cls_token": None, "fc.weight": None,
        "head.fc.weight": None, "patch_embed.proj.weight": None,
        "layer2.0.downsample.1.weight": "layer2.0", "blocks.3.attn.qkv.weight": "blocks.3",
        "stages.1.blocks.2.mlp.fc1.weight": "stages.1.blocks.2", "stages.1.downsample.0.weight": "stages.1",
        "blocks.2.1.conv_pw.weight": "blocks.2.1", "layers.0.blocks.1.norm1.weight": "layers.0.blocks.1",
        "backbone.layer1.0.conv1.weight": "backbone.layer1.0",
    }
    for name, key in cases.items():
        assert _block_key(name) == key, name


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit", "test_convnext", "resnet18"])
def test_layer_ids_are_ordered_stem_to_head(arch):
    import visionzoo

    if not visionzoo.is_model(arch):
        pytest.skip(f"{arch} not registered yet")
    model = visionzoo.create_model(arch, num_classes=7)
    ids, n = param_layer_ids(model)
    order = [ids[k] for k, _ in model.named_parameters()]
    assert order == sorted(order), "layer ids must not decrease from input to output"
    assert order[0] == 0 and order[-1] == n - 1 and n >= 4
    head = {id(p) for p in model.get_classifier().parameters()}
    assert all(ids[k] == n - 1 for k, p in model.named_parameters() if id(p) in head)


def test_param_groups_weight_decay_and_layer_decay(tiny_dir):
    import visionzoo

    model = visionzoo.create_model(MODEL, num_classes=4)
    groups = param_groups(model, weight_decay=0.1, layer_decay=0.5)
    for g in groups:
        for name, p in zip(g["param_names"], g["params"]):
            assert (g["weight_decay"] == 0.0) == (p.ndim <= 1), name
    by_layer = {g["layer_id"]: g["lr_scale"] for g in groups}
    assert by_layer[max(by_layer)] == 1.0 and by_layer[0] == 0.5 ** max(by_layer)
    opt = create_optimizer(model, "sgd", lr=0.1, weight_decay=0.1, layer_decay=0.5)
    assert {g["lr"] for g in opt.param_groups} == {0.1 * s for s in by_layer.values()}


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_every_optimizer_reduces_a_simple_loss(opt):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 1))
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    optim = create_optimizer(model, opt, lr=1e-2 if opt not in ("sgd", "momentum", "nesterov") else 5e-2,
                             weight_decay=1e-4)
    first = None
    for _ in range(30):
        loss = nn.functional.mse_loss(model(x), y)
        first = first if first is not None else loss.item()
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < first


def test_bad_optimizer_arguments():
    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="unknown optimizer"):
        create_optimizer(m, "adamx")
    with pytest.raises(ValueError, match="layer decay"):
        create_optimizer(m, "adamw", layer_decay=1.5)
    with pytest.raises(ValueError):
        Lamb(m.parameters(), lr=0)


def test_scheduler_warmup_cosine_and_step():
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=1.0)
    s = Scheduler(opt, 1.0, total_steps=110, steps_per_epoch=10, kind="cosine", warmup_steps=10,
                  warmup_lr_factor=0.0, min_lr=0.0)
    assert s.lr_at(0) == 0.0 and math.isclose(s.lr_at(5), 0.5) and s.lr_at(10) == 1.0
    assert math.isclose(s.lr_at(60), 0.5) and s.lr_at(110) < 1e-12
    s.step(60)
    assert math.isclose(opt.param_groups[0]["lr"], 0.25)
    s2 = Scheduler(opt, 1.0, 100, 10, "step", decay_epochs=3, decay_rate=0.1)
    assert s2.lr_at(29) == 1.0 and math.isclose(s2.lr_at(30), 0.1) and math.isclose(s2.lr_at(65), 0.01)
    s2.load_state_dict(s.state_dict())
    assert s2.last_step == 60
    with pytest.raises(ValueError, match="unknown schedule"):
        Scheduler(opt, 1.0, 10, 1, "poly")


def test_mixup_and_cutmix_targets():
    import numpy as np

    np.random.seed(0)
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6) % 3
    for kw in (dict(mixup_alpha=0.4), dict(mixup_alpha=0.0, cutmix_alpha=1.0)):
        xm, t = Mixup(3, label_smoothing=0.1, **kw)(x.clone(), y)
        assert xm.shape == x.shape and t.shape == (6, 3)
        assert torch.allclose(t.sum(1), torch.ones(6))
    with pytest.raises(ValueError):
        Mixup(3, mixup_alpha=0, cutmix_alpha=0)


def test_topk_and_ema():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert topk_correct(logits, torch.tensor([1, 2]), (1, 5)) == [1, 2]
    m = nn.Linear(2, 2)
    ema = ModelEma(m, decay=0.5, warmup=False)
    with torch.no_grad():
        m.weight.add_(1.0)
    before = ema.module.weight.clone()
    ema.update(m)
    assert torch.allclose(ema.module.weight, 0.5 * before + 0.5 * m.weight)


def test_checkpoint_is_atomic_and_rng_roundtrips(tmp_path):
    import random

    state = get_rng_state()
    a = (random.random(), torch.rand(3))
    p = save_checkpoint({"state_dict": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "epoch": 0,
                         "args": {"model": "x"}, "rng": state}, tmp_path / "last.pth")
    assert [f.name for f in tmp_path.iterdir()] == ["last.pth"]
    set_rng_state(load_training_checkpoint(p)["rng"])
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


# ----------------------------------------------------------------------------------------------
# data and input errors

def _png(path: Path, value: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), value).save(path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="no class sub-directories"):
        ImageFolder(tmp_path / "flat")
    _png(tmp_path / "d" / "cat" / "1.png")
    (tmp_path / "d" / "dog").mkdir()
    with pytest.raises(DatasetError, match="hold no images.*'dog'"):
        ImageFolder(tmp_path / "d")
    _png(tmp_path / "d" / "dog" / "1.png", 255)
    ds = ImageFolder(tmp_path / "d")
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 1]
    tr, va = split_samples([0] * 10 + [1] * 10, 0.2, seed=1)
    assert len(va) == 4 and sorted(tr + va) == list(range(20))


def test_train_rejects_bad_input(tmp_path, tiny_dir, digits_dir):
    with pytest.raises(DatasetError, match="not found"):
        train(TrainConfig(model=MODEL, data=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="--data DIR"):
        train(TrainConfig(model=MODEL))
    with pytest.raises(DatasetError, match="--num-classes 5 but .* 10 class folders"):
        train(TrainConfig(model=MODEL, data=str(digits_dir), num_classes=5))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with pytest.raises(ResumeError, match="corrupt or truncated"):
        train(TrainConfig(model=MODEL, data=str(digits_dir), resume=str(bad), output=str(tmp_path / "o")))
    weights = tmp_path / "weights.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    with pytest.raises(ResumeError, match="initial-checkpoint"):
        load_training_checkpoint(weights)
    # the CLI turns these into exit code 1 with a message
    assert _cli(["train", "--model", MODEL, "--data", str(tmp_path / "nope")]) == 1


# ----------------------------------------------------------------------------------------------
# end-to-end

def test_train_then_validate_cli(tmp_path, tiny_dir, digits_dir, one_thread, capsys):
    out = tmp_path / "run"
    rc = _cli(["train", *BASE, "--data", str(digits_dir), "--epochs", "2", "--head", "mlp", "--head-hidden", "32",
               "--ema", "--ema-decay", "0.9", "--mixup", "0.2", "--label-smoothing", "0.1", "--workers", "1",
               "--output", str(out)])
    assert rc == 0
    names = {p.name for p in out.iterdir()}
    assert {"last.pth", "model_best.pth", "metrics.csv", "metrics.svg", "args.json"} <= names
    rows = read_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r[k]) for r in rows for k in ("train_loss", "val_loss", "val_top1", "val_top5",
                                                              "ema_val_top1"))
    ckpt = load_training_checkpoint(out / "last.pth")
    assert ckpt["model_info"]["head"] == "mlp" and ckpt["epoch"] == 1
    assert ckpt["class_names"] == [str(i) for i in range(10)]
    capsys.readouterr()
    res = tmp_path / "val.json"
    assert _cli(["validate", "--checkpoint", str(out / "last.pth"), "--data", str(digits_dir), "--workers", "0",
                 "--results-file", str(res)]) == 0
    v = json.loads(res.read_text())
    assert v["images"] == 20 and math.isclose(v["top1"], rows[-1]["val_top1"], abs_tol=1e-3)
    assert math.isclose(v["loss"], rows[-1]["val_loss"], rel_tol=1e-4)
    assert _cli(["validate", "--checkpoint", str(out / "last.pth"), "--data", str(digits_dir), "--use-ema",
                 "--workers", "0", "--results-file", str(res)]) == 0
    assert math.isclose(json.loads(res.read_text())["top1"], rows[-1]["ema_val_top1"], abs_tol=1e-3)


def test_freeze_backbone_layer_decay_amp_grad_checkpointing(tmp_path, tiny_dir, digits_dir, one_thread):
    import visionzoo

    init = tmp_path / "init.pth"
    torch.manual_seed(1)
    ref = visionzoo.create_model(MODEL, num_classes=10, in_chans=1)
    torch.save(ref.state_dict(), init)
    cfg = TrainConfig(model=MODEL, data=str(digits_dir), in_chans=1, img_size=16, epochs=1, batch_size=16,
                      initial_checkpoint=str(init), freeze_backbone=True, layer_decay=0.7, amp="bfloat16",
                      grad_checkpointing=True, opt="lamb", workers=0, output=str(tmp_path / "f"), progress=False)
    train(cfg)
    sd = load_training_checkpoint(tmp_path / "f" / "last.pth")["state_dict"]
    for k, v in ref.state_dict().items():
        changed = not torch.equal(v, sd[k])
        assert changed == k.startswith("fc."), k  # frozen BatchNorm statistics stay put as well


def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_dir, digits_dir, one_thread):
    common = dict(model=MODEL, data=str(digits_dir), in_chans=1, img_size=16, epochs=3, batch_size=16, hflip=0.0,
                  scale=(0.6, 1.0), lr=3e-3, warmup=0.5, ema=True, mixup=0.2, drop_rate=0.1, workers=1,
                  progress=False, seed=3)
    full = train(TrainConfig(**common, output=str(tmp_path / "full"), keep_checkpoints=3))
    resumed = train(TrainConfig(**common, output=str(tmp_path / "resumed"),
                                resume=str(tmp_path / "full" / "checkpoint-1.pth")))
    assert _metrics(tmp_path / "full" / "metrics.csv") == _metrics(tmp_path / "resumed" / "metrics.csv")
    a = load_training_checkpoint(tmp_path / "full" / "last.pth")
    b = load_training_checkpoint(tmp_path / "resumed" / "last.pth")
    for key in ("state_dict", "state_dict_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert full["val_top1"] == resumed["val_top1"]


def test_kill_and_resume_subprocess(tmp_path, tiny_dir, digits_dir, one_thread):
    """SIGKILL a CLI run right after its first checkpoint; --resume auto must finish identically."""
    args = [*BASE, "--data", str(digits_dir), "--epochs", "3", "--workers", "1", "--seed", "5", "--ema"]
    ref = tmp_path / "ref"
    assert _cli(["train", *args, "--output", str(ref)]) == 0
    out = tmp_path / "killed"
    env = dict(_sub_env(), TINYNET_SLEEP="0.05")
    cmd = [sys.executable, str(tiny_dir / "launch.py"), "train", *args, "--output", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not (out / "last.pth").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = load_training_checkpoint(out / "last.pth")["epoch"] + 1
    assert done < 3, "the run finished before it could be killed"
    r = subprocess.run([sys.executable, str(tiny_dir / "launch.py"), "train", *args, "--output", str(out),
                        "--resume", "auto"], env=_sub_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from" in r.stdout
    assert _metrics(out / "metrics.csv") == _metrics(ref / "metrics.csv")
    a = load_training_checkpoint(ref / "last.pth")["state_dict"]
    b = load_training_checkpoint(out / "last.pth")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_two_processes_cpu(tmp_path, tiny_dir, digits_dir, one_thread):
    out = tmp_path / "ddp"
    # torchrun's agent runs under the same watchdog as the workers (see LAUNCHER_SRC): should
    # anything hang, the failure shows where instead of a bare timeout
    agent = ("import faulthandler, sys; faulthandler.dump_traceback_later(200, exit=True); "
             "from torch.distributed.run import main; sys.exit(main())")
    cmd = [sys.executable, "-c", agent, "--standalone", "--nproc_per_node", "2",
           str(tiny_dir / "launch.py"), "train", *BASE, "--data", str(digits_dir), "--epochs", "2",
           "--workers", "1", "--ema", "--output", str(out)]
    r = subprocess.run(cmd, env=dict(_sub_env(), VZ_WATCHDOG_S="180"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("epoch 1/2") == 1, "only rank 0 logs"
    assert "2 process(es)" in r.stdout
    ckpt = load_training_checkpoint(out / "last.pth")
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 1
    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 2
    # the distributed (sharded) validation equals a single-process evaluation of the saved model
    res = tmp_path / "val.json"
    assert _cli(["validate", "--checkpoint", str(out / "last.pth"), "--data", str(digits_dir), "--workers", "0",
                 "--results-file", str(res)]) == 0
    v = json.loads(res.read_text())
    assert math.isclose(v["top1"], rows[-1]["val_top1"], abs_tol=1e-3)
    assert math.isclose(v["loss"], rows[-1]["val_loss"], rel_tol=1e-4)
