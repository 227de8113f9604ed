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

    requests: list[tuple[str, int]] = []  # (range header or '', bytes sent), per server

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
        self.server.log.append((rng, sent))  # type: ignore[attr-defined]

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
