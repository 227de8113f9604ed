"""Pretrained pipeline: local files, hub cache, URL cache, adaptation, and bad input."""
from __future__ import annotations

import hashlib
import http.server
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import visionzoo
from visionzoo.pretrained import (CheckpointError, HashMismatchError, WeightsNotFoundError, adapt_input_conv,
                                  download_url)

ARCH = "resnet18"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A resnet18 with random weights saved as .safetensors and .pth, plus its eval outputs."""
    torch.manual_seed(0)
    model = visionzoo.create_model(ARCH).eval()
    d = tmp_path_factory.mktemp("ckpt")
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    st, pth = d / "weights.safetensors", d / "weights.pth"
    save_file(sd, str(st))
    torch.save(sd, pth)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    return dict(model=model, st=st, pth=pth, x=x, logits=logits, pooled=pooled, dir=d, sd=sd)


@pytest.mark.parametrize("fmt", ["st", "pth"])
def test_local_file_loads_exactly(reference, fmt):
    m = visionzoo.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(reference[fmt]))).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(reference["x"]), reference["logits"], rtol=0, atol=0)


def test_num_classes_adaptation(reference):
    m10 = visionzoo.create_model(ARCH, pretrained=True, num_classes=10,
                                 pretrained_cfg_overlay=dict(file=str(reference["st"]))).eval()
    assert m10.get_classifier().out_features == 10
    assert torch.isfinite(m10.get_classifier().weight).all()
    with torch.no_grad():
        assert m10(reference["x"]).shape == (2, 10)
        # the backbone is the checkpoint's
        torch.testing.assert_close(m10.forward_head(m10.forward_features(reference["x"]), pre_logits=True),
                                   reference["pooled"])
    m0 = visionzoo.create_model(ARCH, pretrained=True, num_classes=0,
                                pretrained_cfg_overlay=dict(file=str(reference["st"]))).eval()
    with torch.no_grad():
        torch.testing.assert_close(m0(reference["x"]), reference["pooled"])


def test_in_chans_adaptation_rules(reference):
    w = reference["sd"]["conv1.weight"]
    torch.testing.assert_close(adapt_input_conv(1, w), w.sum(dim=1, keepdim=True))
    w2 = adapt_input_conv(2, w)
    torch.testing.assert_close(w2, w[:, :2] * 1.5)
    w5 = adapt_input_conv(5, w)
    torch.testing.assert_close(w5, torch.cat([w, w[:, :2]], dim=1) * 0.6)


@pytest.mark.parametrize("in_chans", [1, 2, 5])
def test_in_chans_load(reference, in_chans):
    m = visionzoo.create_model(ARCH, pretrained=True, in_chans=in_chans,
                               pretrained_cfg_overlay=dict(file=str(reference["pth"]))).eval()
    assert m.conv1.weight.shape[1] == in_chans
    torch.testing.assert_close(m.conv1.weight, adapt_input_conv(in_chans, reference["sd"]["conv1.weight"]))
    if in_chans == 1:  # a gray image gives the RGB model's answer on the same gray image
        gray = reference["x"][:, :1]
        with torch.no_grad():
            torch.testing.assert_close(m(gray), reference["model"](gray.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_checkpoint_path_training_checkpoint(reference, tmp_path):
    ckpt = {"epoch": 3, "state_dict": {"module." + k: v for k, v in reference["sd"].items()},
            "optimizer": {"state": {}, "param_groups": []}}
    path = tmp_path / "train.pth"
    torch.save(ckpt, path)
    m = visionzoo.create_model(ARCH, checkpoint_path=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(reference["x"]), reference["logits"])


def test_corrupt_and_truncated_files(reference, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt"):
        visionzoo.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(junk)))
    for src in ("st", "pth"):
        data = reference[src].read_bytes()
        cut = tmp_path / f"cut{reference[src].suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError):
            visionzoo.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(cut)))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/visionzoo_pwned",))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Evil()}, f)
    with pytest.raises(CheckpointError):
        visionzoo.create_model(ARCH, checkpoint_path=path)
    assert not Path("/tmp/visionzoo_pwned").exists()


def test_wrong_architecture_names_keys(tmp_path):
    other = visionzoo.create_model("resnet34")
    path = tmp_path / "r34.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="unexpected keys.*layer1.2"):
        visionzoo.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    bad = {k: v for k, v in visionzoo.create_model(ARCH).state_dict().items()}
    bad["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    path2 = tmp_path / "shape.safetensors"
    save_file(bad, str(path2))
    with pytest.raises(CheckpointError, match=r"shape mismatches: layer1\.0\.conv1\.weight"):
        visionzoo.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=str(path2)))


def test_missing_file_and_no_network(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        visionzoo.create_model(ARCH, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(tmp_path / "nope.pth"), hf_hub_id=None, url=None))
    url = "http://127.0.0.1:9/resnet18-deadbeef.pth"  # discard port: connection refused
    with pytest.raises(WeightsNotFoundError, match="127.0.0.1:9"):
        visionzoo.create_model(ARCH, pretrained=True, cache_dir=tmp_path,
                               pretrained_cfg_overlay=dict(hf_hub_id=None, url=url))


def test_tag_without_weights_is_an_error():
    untrained = [t for t, c in visionzoo.registry.get_arch_pretrained_cfgs("resnet50").items() if not c.has_weights]
    cfg = dict(hf_hub_id=None, url=None, file=None)
    with pytest.raises(ValueError, match="no pretrained weights"):
        visionzoo.create_model("resnet18", pretrained=True, pretrained_cfg_overlay=cfg)
    assert isinstance(untrained, list)


# --- URL cache against a local HTTP server ------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []
    cut_after: int | None = None  # simulate a dropped connection after this many bytes

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        rng = self.headers.get("Range")
        type(self).log.append((self.path, rng))
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server(reference):
    data = reference["pth"].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    _Handler.files = {f"/resnet18-{digest[:8]}.pth": data, "/resnet18-00000000.pth": data,
                      f"/plain-{digest[:8]}.bin": data}
    _Handler.log = []
    _Handler.cut_after = None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield dict(base=f"http://127.0.0.1:{httpd.server_address[1]}", digest=digest, data=data)
    httpd.shutdown()


def test_url_download_cache_and_reuse(server, reference, tmp_path):
    url = f"{server['base']}/resnet18-{server['digest'][:8]}.pth"
    overlay = dict(hf_hub_id=None, url=url)
    m = visionzoo.create_model(ARCH, pretrained=True, cache_dir=tmp_path, pretrained_cfg_overlay=overlay).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(reference["x"]), reference["logits"])
    cached = tmp_path / "checkpoints" / f"resnet18-{server['digest'][:8]}.pth"
    assert cached.read_bytes() == server["data"]
    assert not list(tmp_path.rglob("*.partial"))
    n = len(_Handler.log)
    visionzoo.create_model(ARCH, pretrained=True, cache_dir=tmp_path, pretrained_cfg_overlay=overlay)
    assert len(_Handler.log) == n, "second load must come from the cache"


def test_hash_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(HashMismatchError):
        download_url(f"{server['base']}/resnet18-00000000.pth", tmp_path, progress=False)
    assert [p for p in tmp_path.iterdir() if p.suffix != ".lock"] == []  # the download lock may stay


def test_interrupted_download_resumes(server, tmp_path):
    url = f"{server['base']}/plain-{server['digest'][:8]}.bin"
    _Handler.cut_after = len(server["data"]) // 3
    with pytest.raises(ConnectionError, match="resumes"):
        download_url(url, tmp_path, progress=False)
    partial = tmp_path / f"plain-{server['digest'][:8]}.bin.partial"
    assert partial.exists() and 0 < partial.stat().st_size < len(server["data"])
    assert not (tmp_path / f"plain-{server['digest'][:8]}.bin").exists()
    resumed_from = partial.stat().st_size
    _Handler.cut_after = None
    path = download_url(url, tmp_path, progress=False)
    assert path.read_bytes() == server["data"]
    assert _Handler.log[-1][1] == f"bytes={resumed_from}-"
    assert not partial.exists()


# --- Hugging Face Hub cache, offline ------------------------------------------------------------

def _populate_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """Lay files out as huggingface_hub's cache does (refs/main -> snapshots/<commit>/...)."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        (snap / name).write_bytes(data)


def test_hub_checkpoint_loads_offline_strict(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import json as _json

    config = {"architecture": ARCH, "num_classes": 1000, "num_features": 512,
              "pretrained_cfg": {"tag": "a1_in1k", "input_size": [3, 224, 224], "crop_pct": 0.95,
                                 "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225], "first_conv": "conv1", "classifier": "fc"}}
    _populate_hub_cache(tmp_path / "hub", "timm/resnet18.a1_in1k",
                        {"model.safetensors": reference["st"].read_bytes(),
                         "config.json": _json.dumps(config).encode()})
    m = visionzoo.create_model("resnet18.a1_in1k", pretrained=True, cache_dir=tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(m(reference["x"]), reference["logits"], rtol=0, atol=0)
    m2 = visionzoo.create_model("hf-hub:timm/resnet18.a1_in1k", pretrained=True, cache_dir=tmp_path).eval()
    assert m2.pretrained_cfg.crop_pct == 0.95
    with torch.no_grad():
        torch.testing.assert_close(m2(reference["x"]), reference["logits"], rtol=0, atol=0)


def test_hub_without_network_fails_once_with_a_hint(tmp_path, monkeypatch):
    """No connection: the cache is searched for each candidate, the network tried once, not per file."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    from visionzoo.pretrained import sources
    from visionzoo.pretrained.sources import WeightsNotFoundError, _hub_download

    monkeypatch.setattr(sources, "_unreachable", lambda url: None)  # the Hub answers the probe
    calls = []

    def fake_download(repo_id, filename, cache_dir=None, local_files_only=False, **kw):
        calls.append((filename, local_files_only))
        raise LocalEntryNotFoundError("cannot reach the Hub and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(WeightsNotFoundError, match="no network"):
        _hub_download("timm/resnet18.a1_in1k", None, tmp_path)
    assert calls == [("model.safetensors", True), ("pytorch_model.bin", True), ("model.safetensors", False)]

    calls.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        _hub_download("timm/resnet18.a1_in1k", None, tmp_path)
    assert all(local for _, local in calls)
