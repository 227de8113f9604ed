"""Sharing (issue 22): save_pretrained / local-dir: / hf-hub: / push_to_hub / licences.

The round trip trains a tiny built-in architecture (``test_resnet``) on a slice of scikit-learn's
digits written with class names, then reads the run's ``model/`` folder back with ``predict``,
``validate`` and ``create_model("local-dir:...")``. The Hub is never contacted: downloads and the
upload API are replaced by fakes that record their arguments.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import visionzoo
from visionzoo.pretrained.hub import (CARD_NAME, CONFIG_NAME, HEAD_KEY, WEIGHTS_NAME, hub_config, push_to_hub,
                                      save_pretrained)

ARCH = "test_resnet"
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CLASSES = sorted(NAMES)  # class index order: the folders sorted by name
# config.json top-level keys as the reference library's hub repos hold them
HUB_KEYS = {"architecture", "num_classes", "num_features", "global_pool", "label_names", "label_descriptions",
            "model_args", "pretrained_cfg"}


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Digits with the class folders named as a user would (``zero`` ... ``nine``)."""
    pytest.importorskip("sklearn")
    from visionzoo.data.dataset import write_digits_folder

    root = write_digits_folder(tmp_path_factory.mktemp("data") / "digits", val_fraction=0.25, limit_per_class=6)
    for split in ("train", "val"):
        for i, name in enumerate(NAMES):
            (root / split / str(i)).rename(root / split / name)
    return root


def _cli(argv: list[str]) -> int:
    from visionzoo.cli.main import main

    return main(argv)


@pytest.fixture(scope="module")
def trained_run(digits_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch of ``visionzoo train`` on the digits: the run folder (with its ``model/``)."""
    out = tmp_path_factory.mktemp("run") / "digits"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = _cli(["train", "--model", ARCH, "--data", str(digits_dir), "--epochs", "1", "--batch-size", "16",
                   "--lr", "0.01", "--img-size", "16", "--in-chans", "1", "--workers", "0", "--output", str(out),
                   "--no-progress", "--json"])
    finally:
        torch.set_num_threads(n)
    assert rc == 0
    return out


def _tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return visionzoo.create_model(ARCH, **kw).eval()


# ----------------------------------------------------------------------------------------------
# the round trip: train -> folder -> predict with class names -> identical outputs

def test_train_writes_a_local_dir_folder(trained_run: Path):
    folder = trained_run / "model"
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["architecture"] == ARCH and config["num_classes"] == 10
    assert config["label_names"] == CLASSES  # the user's class folders, in class-index order
    assert config["model_args"] == {"in_chans": 1}
    assert config["pretrained_cfg"]["input_size"] == [1, 16, 16]
    card = (folder / CARD_NAME).read_text()
    assert "## Training" in card and "| epochs | 1 |" in card and "val_top1" in card


def test_local_dir_outputs_equal_the_trained_model(trained_run: Path):
    ckpt = torch.load(trained_run / "last.pth", map_location="cpu", weights_only=True)
    ref = visionzoo.create_model(ARCH, num_classes=10, in_chans=1).eval()
    ref.load_state_dict(ckpt["state_dict"])
    x = torch.randn(3, 1, 16, 16)
    for name in (f"local-dir:{trained_run / 'model'}", f"local-dir:{trained_run}"):  # the run folder works too
        model = visionzoo.create_model(name, pretrained=True).eval()
        assert model.pretrained_cfg.label_names == tuple(CLASSES)
        with torch.no_grad():
            assert torch.equal(model(x), ref(x))


def test_predict_prints_the_users_class_names(trained_run: Path, digits_dir: Path, capsys):
    images = sorted((digits_dir / "val" / "three").iterdir())[:2]
    assert _cli(["predict", *map(str, images), "--model", f"local-dir:{trained_run}", "--json", "--topk", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert [t["label"] for t in row["top"]] == [CLASSES[t["index"]] for t in row["top"]]


def test_validate_reads_the_folder(trained_run: Path, digits_dir: Path, capsys):
    assert _cli(["validate", "--checkpoint", str(trained_run / "last.pth"), "--data", str(digits_dir),
                 "--workers", "0", "--json"]) == 0
    from_ckpt = json.loads(capsys.readouterr().out)
    assert _cli(["validate", "--model", f"local-dir:{trained_run / 'model'}", "--data", str(digits_dir),
                 "--workers", "0", "--json"]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    assert from_dir["images"] == from_ckpt["images"] > 0
    assert (from_dir["top1"], from_dir["loss"]) == (from_ckpt["top1"], from_ckpt["loss"])


# ----------------------------------------------------------------------------------------------
# the layout

def test_config_json_and_safetensors_follow_the_hub_layout(tmp_path: Path):
    from safetensors import safe_open

    model = _tiny(num_classes=3)
    folder = save_pretrained(model, tmp_path / "m", label_names=["a", "b", "c"], metrics={"top1": float("nan")})
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert list(config)[:3] == ["architecture", "num_classes", "num_features"]
    assert set(config) <= HUB_KEYS and {"label_names", "pretrained_cfg"} <= set(config)
    assert (config["num_classes"], config["num_features"]) == (3, model.num_features)
    cfg = config["pretrained_cfg"]
    assert cfg["num_classes"] == 3 and cfg["license"] == model.pretrained_cfg.license
    assert cfg["first_conv"] == model.pretrained_cfg.first_conv and cfg["classifier"] == model.pretrained_cfg.classifier
    # the folder is its own weight source: no pointers back to the starting weights
    assert not {"hf_hub_id", "url", "file", "architecture", "label_names"} & set(cfg)
    assert "model_args" not in config  # in_chans 3 is the default
    with safe_open(str(folder / WEIGHTS_NAME), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert set(f.keys()) == set(model.state_dict())
        for k, v in model.state_dict().items():
            assert torch.equal(f.get_tensor(k), v)
    card = (folder / CARD_NAME).read_text()
    assert card.startswith("---\ntags:\n- image-classification\n- timm\n")
    assert f"license: {cfg['license']}" in card and "library_name: timm" in card


def test_config_records_in_chans_data_config_and_licence(tmp_path: Path):
    model = _tiny(num_classes=2, in_chans=1)
    config = hub_config(model, data_config={"input_size": (1, 32, 32), "mean": (0.5,), "std": (0.2,),
                                            "crop_pct": 1.0, "interpolation": "bilinear", "crop_mode": "center"},
                        license="cc-by-nc-4.0", model_args={"drop_rate": 0.1})
    assert config["model_args"] == {"drop_rate": 0.1, "in_chans": 1}
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [1, 32, 32] and cfg["mean"] == [0.5] and cfg["crop_pct"] == 1.0
    assert "test_input_size" not in cfg and cfg["license"] == "cc-by-nc-4.0"
    with pytest.raises(ValueError, match="label_names"):
        hub_config(model, label_names=["only one"])


def test_custom_licence_is_other_in_the_card(tmp_path: Path):
    folder = save_pretrained(_tiny(), tmp_path / "m", license="dinov3-license")
    card = (folder / CARD_NAME).read_text()
    assert "license: other\nlicense_name: dinov3-license" in card


def test_mlp_head_round_trip(tmp_path: Path):
    from visionzoo.train.model import MlpHeadClassifier, build_train_model

    torch.manual_seed(0)
    model = build_train_model(ARCH, 4, head="mlp", head_hidden=8).eval()
    folder = save_pretrained(model, tmp_path / "mlp", label_names=list("wxyz"))
    assert json.loads((folder / CONFIG_NAME).read_text())[HEAD_KEY] == {"type": "mlp", "hidden": 8, "dropout": 0.2}
    loaded = visionzoo.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert isinstance(loaded, MlpHeadClassifier) and loaded.num_classes == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_local_dir_without_pretrained_is_the_architecture(tmp_path: Path):
    folder = save_pretrained(_tiny(num_classes=5), tmp_path / "m")
    model = visionzoo.create_model(f"local-dir:{folder}")
    assert model.num_classes == 5 and model.pretrained_cfg.file == str(folder / WEIGHTS_NAME)
    assert visionzoo.create_model(f"local-dir:{folder}", num_classes=7).num_classes == 7  # user arguments win


def test_training_run_folder_for_a_model_without_cfg(tmp_path: Path, capsys):
    """A user model registered without a cfg gets its architecture from the run's options; a
    folder that cannot be written is a warning, not a failed run (the checkpoints are saved)."""
    from visionzoo.pretrained.hub import save_training_run

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    net.num_classes, net.num_features, net.in_chans = 2, 4, 1
    folder = save_training_run(net, tmp_path / "run", label_names=["a", "b"], data_config={"input_size": (1, 8, 8)},
                               options={"model": "my_net.v1", "epochs": 1}, metrics={"val_top1": 50.0})
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["architecture"] == "my_net" and config["model_args"] == {"in_chans": 1}
    assert "| epochs | 1 |" in (folder / CARD_NAME).read_text()
    del net.num_features
    assert save_training_run(net, tmp_path / "run2", label_names=["a", "b"], data_config={},
                             options={"model": "my_net"}) is None
    assert "warning: could not write the shareable folder" in capsys.readouterr().err


def test_local_dir_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        visionzoo.create_model(f"local-dir:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        visionzoo.create_model(f"local-dir:{tmp_path / 'empty'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CONFIG_NAME).write_text(json.dumps({"num_classes": 3}))
    with pytest.raises(RuntimeError, match="architecture"):
        visionzoo.create_model(f"local-dir:{tmp_path / 'bad'}")


# ----------------------------------------------------------------------------------------------
# hf-hub: through huggingface_hub's download API (replaced: this machine has no network)

def test_hf_hub_through_a_monkeypatched_download(tmp_path: Path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    model = _tiny(num_classes=3)
    folder = save_pretrained(model, tmp_path / "repo", label_names=["cat", "dog", "eel"])
    calls = []

    def fake_download(repo_id, filename, cache_dir=None, local_files_only=False, **kw):
        calls.append((repo_id, filename))
        path = folder / filename
        if not path.is_file():
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no reachability probe
    loaded = visionzoo.create_model("hf-hub:me/tiny-pets", pretrained=True).eval()
    assert ("me/tiny-pets", CONFIG_NAME) in calls and ("me/tiny-pets", WEIGHTS_NAME) in calls
    assert loaded.pretrained_cfg.label_names == ("cat", "dog", "eel")
    assert loaded.pretrained_cfg.hf_hub_id == "me/tiny-pets" and not loaded.pretrained_cfg.url
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ----------------------------------------------------------------------------------------------
# push_to_hub: everything up to the upload call

class FakeApi:
    """Records the HfApi calls; ``upload_folder`` also records the files present at that moment."""

    instances: list["FakeApi"] = []

    def __init__(self, token=None):
        self.token, self.calls = token, []
        FakeApi.instances.append(self)

    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw))
        return f"https://huggingface.co/{kw['repo_id']}"

    def create_branch(self, **kw):
        self.calls.append(("create_branch", kw))

    def upload_folder(self, **kw):
        folder = Path(kw["folder_path"])
        kw["present"] = {p.name: p.read_bytes() for p in folder.iterdir() if p.name in kw["allow_patterns"]}
        self.calls.append(("upload_folder", kw))
        return f"https://huggingface.co/{kw['repo_id']}/commit/abc"


def test_push_to_hub_arguments(tmp_path: Path):
    model = _tiny(num_classes=3)
    folder = save_pretrained(model, tmp_path / "m", label_names=["a", "b", "c"])
    (folder / "last.pth").write_bytes(b"not uploaded")
    api = FakeApi()
    result = push_to_hub(folder, "me/tiny", private=True, revision="v1", commit_message="first", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "me/tiny", "private": True, "exist_ok": True, "repo_type": "model"}
    assert api.calls[1][1]["branch"] == "v1"
    up = api.calls[2][1]
    assert up["repo_id"] == "me/tiny" and up["folder_path"] == str(folder) and up["commit_message"] == "first"
    assert up["revision"] == "v1" and up["create_pr"] is False
    assert sorted(up["allow_patterns"]) == sorted([CONFIG_NAME, WEIGHTS_NAME, CARD_NAME])
    assert up["present"][CONFIG_NAME] == (folder / CONFIG_NAME).read_bytes()
    assert result["commit_url"].endswith("/commit/abc") and result["files"] == up["allow_patterns"]

    # a model is written to a temporary folder first; the save arguments reach save_pretrained
    api = FakeApi()
    push_to_hub(model, "me/tiny2", api=api, label_names=["x", "y", "z"], license="mit")
    up = api.calls[-1][1]
    config = json.loads(up["present"][CONFIG_NAME])
    assert config["label_names"] == ["x", "y", "z"] and config["pretrained_cfg"]["license"] == "mit"
    assert b"license: mit" in up["present"][CARD_NAME] and not Path(up["folder_path"]).exists()
    with pytest.raises(ValueError, match="org/name"):
        push_to_hub(folder, "no-org", api=FakeApi())


def test_push_to_hub_cli_and_offline(tmp_path: Path, monkeypatch, capsys):
    import huggingface_hub
    from huggingface_hub import constants

    folder = save_pretrained(_tiny(), tmp_path / "run" / "model")
    FakeApi.instances.clear()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert _cli(["push-to-hub", str(tmp_path / "run"), "me/run", "--token", "t0k", "--create-pr", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["repo_id"] == "me/run" and out["folder"] == str(folder)
    api = FakeApi.instances[-1]
    assert api.token == "t0k" and api.calls[-1][1]["create_pr"] is True
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE"):
        push_to_hub(folder, "me/run")


# ----------------------------------------------------------------------------------------------
# licences

def test_every_tag_has_a_licence():
    tags = visionzoo.list_pretrained()
    assert tags
    missing = [t for t in tags if not visionzoo.get_pretrained_cfg(t).license]
    assert not missing
    cfg = visionzoo.get_pretrained_cfg("resnet50.bamboo")
    assert cfg.license == "unknown"
    assert "license" not in cfg and "license" not in dict(cfg)  # the mapping stays the source's record
    assert cfg.replace(crop_pct=0.9).license == "unknown"  # overlays keep the implied licence


def test_list_pretrained_license_filter(capsys):
    unknown = visionzoo.list_pretrained(license="unknown")
    assert "resnet50.bamboo" in unknown
    assert all(visionzoo.get_pretrained_cfg(t).license == "unknown" for t in unknown)
    apache = visionzoo.list_pretrained("resnet*", license="Apache-2.0")
    assert apache and "resnet50.a1_in1k" in apache and not set(apache) & set(unknown)
    nc = visionzoo.list_pretrained(license=["cc-by-nc-*"])
    assert nc and all(visionzoo.get_pretrained_cfg(t).license.startswith("cc-by-nc-") for t in nc)
    assert _cli(["list", "resnet50*", "--license", "unknown", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["resnet50.bamboo"]


def test_info_shows_licences(capsys):
    assert _cli(["info", "resnet50", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["license"] == "apache-2.0"
    assert info["tags"]["bamboo"]["license"] == "unknown"
    assert all(t["license"] for t in info["tags"].values())
