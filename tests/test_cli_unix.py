"""The command line as a Unix tool: pipes, Ctrl-C, exit codes, --version / version, --json, completion.

Every command runs in a subprocess (``python -m visionzoo``), as a shell would run it; each start
with torch costs ~2 s, so each run checks several things. Tiny models (test_vit, test_resnet,
test_convnext) on tiny inputs keep the module fast.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import visionzoo

CMD = [sys.executable, "-m", "visionzoo"]
TIMEOUT = 240


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, VISIONZOO_CACHE=str(tmp / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env.pop("VISIONZOO_DEBUG", None)
    env.update(extra)
    return env


def _run(args: list[str], tmp: Path, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(CMD + args, capture_output=True, text=True, timeout=TIMEOUT, env=_env(tmp, **extra_env),
                          cwd=tmp)


def _clean_error(err: str, start: str = "visionzoo: error: ") -> str:
    """stderr is exactly one line starting with ``start``; returns it."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), err
    return lines[0]


def _wait_for(cond, proc: subprocess.Popen, what: str, limit: float = 180.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {limit} s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/<class>/*.png: 2 classes x 6 random 24x24 images."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


# ----------------------------------------------------------------------------------------------
# no torch: parser, list, completion, lazy packages

NO_TORCH_SCRIPT = r"""
import io, json, sys, contextlib
from visionzoo.cli.main import build_parser, main
from visionzoo.cli.completion import _complete_names
import visionzoo.layers, visionzoo.pretrained
from visionzoo import list_models, list_pretrained
build_parser()                                   # every command's options
names = list_models("resnet1*"); tags = list_pretrained("convnext_atto*")
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(["list", "resnet1*", "--pretrained", "--json"])
completions = _complete_names("convnext_atto", True)
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print(json.dumps({"rc": rc, "listed": json.loads(buf.getvalue()), "names": names, "tags": tags,
                  "completions": completions, "torch_modules": loaded}))
"""


def test_parser_list_and_completion_do_not_import_torch(tmp_path):
    r = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT], capture_output=True, text=True, timeout=TIMEOUT,
                       env=_env(tmp_path))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["torch_modules"] == []
    assert res["rc"] == 0 and "resnet18.a1_in1k" in res["listed"] and all(n.startswith("resnet1") for n in res["listed"])
    assert "resnet18" in res["names"] and "convnext_atto.d2_in1k" in res["tags"]
    assert {"convnext_atto", "convnext_atto.d2_in1k"} <= set(res["completions"])


def test_lazy_packages_export_what_they_list():
    import visionzoo.layers as layers
    import visionzoo.pretrained as pretrained

    for pkg in (layers, pretrained):
        missing = [n for n in pkg.__all__ if not hasattr(pkg, n)]
        assert not missing, f"{pkg.__name__} lists names it does not define: {missing}"
        assert set(pkg.__all__) <= set(dir(pkg))
        with pytest.raises(AttributeError):
            getattr(pkg, "no_such_name")


def test_broken_pipe_ends_quietly(tmp_path):
    """`visionzoo list --pretrained | head -1`: the reader takes one line and goes away."""
    import fcntl

    r_fd, w_fd = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):  # a one-page pipe: the ~28 KB listing cannot fit and must hit EPIPE
        fcntl.fcntl(w_fd, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(CMD + ["list", "--pretrained"], stdout=w_fd, stderr=subprocess.PIPE, text=True,
                            env=_env(tmp_path), cwd=tmp_path)
    os.close(w_fd)
    with os.fdopen(r_fd, "r") as reader:
        first = reader.readline()
    _, err = proc.communicate(timeout=TIMEOUT)
    assert "." in first.strip()  # an arch.tag name
    assert "Traceback" not in err and "BrokenPipe" not in err and err.strip() == "", err
    assert proc.returncode == 0

    # and through a real shell pipeline
    sh = subprocess.run(["bash", "-c", f"{shlex.join(CMD)} list 'convnext*' --pretrained | head -5; "
                                       "echo \"status=${PIPESTATUS[0]}\" >&2"],
                        capture_output=True, text=True, timeout=TIMEOUT, env=_env(tmp_path), cwd=tmp_path)
    assert len(sh.stdout.splitlines()) == 5 and sh.stdout.startswith("convnext")
    # stderr: the count line `list` always writes there (stdout holds names only), then the exit status
    lines = [ln for ln in sh.stderr.splitlines() if ln.strip()]
    assert lines[-1] == "status=0" and all(re.fullmatch(r"# \d+ pretrained tags", ln) for ln in lines[:-1]), sh.stderr


def test_version_flag_usage_errors_and_exit_codes(tmp_path):
    r = _run(["--version"], tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"visionzoo {visionzoo.__version__}", r
    for args in (["list", "--bogus"], ["nonsense"], ["info"], ["export", "resnet18", "--format", "tflite"]):
        r = _run(args, tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        _clean_error(r.stderr)
        assert r.stdout == ""
    r = _run([], tmp_path)
    assert r.returncode == 0 and "usage: visionzoo" in r.stdout and "version" in r.stdout


def test_failure_is_one_line_exit_1(tmp_path, capsys):
    from visionzoo.cli.main import main

    r = _run(["info", "resnet181", "--json"], tmp_path)
    assert r.returncode == 1 and r.stdout == ""
    line = _clean_error(r.stderr)
    assert "unknown model 'resnet181'" in line and "resnet18" in line
    # --debug / VISIONZOO_DEBUG=1 add the traceback (checked in-process: same code path)
    assert main(["--debug", "info", "resnet181"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("visionzoo: error: unknown model")


def test_version_command(tmp_path, capsys):
    import torch

    from visionzoo.cli.main import main
    from visionzoo.inference import bf16_supported

    r = _run(["version", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["visionzoo"] == visionzoo.__version__ and info["torch"] == torch.__version__
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    cpu = info["cpu"]
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["optimize_bf16"] == bf16_supported()
    for key in ("avx512", "vnni", "avx512_bf16", "amx_tile"):
        assert isinstance(cpu[key], bool) or cpu[key] is None
    assert (info["accelerator"] is None) == (not torch.cuda.is_available())
    assert main(["version"]) == 0
    text = capsys.readouterr().out
    for word in ("visionzoo", "torch", "python", "platform", "AVX-512", "VNNI", "AMX", "optimize", "accelerator"):
        assert word in text


# ----------------------------------------------------------------------------------------------
# --json of every command, parsed back

def test_json_info_predict_select_export(tmp_path, image_folder):
    r = _run(["info", "test_vit", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["name"] == "test_vit" and info["params"] > 0 and info["feature_info"]

    r = _run(["predict", str(image_folder / "a"), str(image_folder / "missing.png"), "--model", "test_vit",
              "--no-pretrained", "--topk", "2", "--json"], tmp_path)
    assert r.returncode == 1  # one input failed, the others were classified
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 7 and sum("error" in x for x in rows) == 1
    assert all(len(x["top"]) == 2 and {"index", "label", "prob"} <= set(x["top"][0]) for x in rows if "top" in x)

    r = _run(["select", "--models", "resnet18*", "--no-run", "--no-progress", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    cands = json.loads(r.stdout)
    assert cands and all(c["arch"].startswith("resnet18") and "status" in c and "top1" in c for c in cands)

    out = tmp_path / "m.pt"
    r = _run(["export", "test_convnext", "-f", "torchscript", "-o", str(out), "--img-size", "64", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["fmt"] == "torchscript" and Path(res["path"]) == out and out.exists() and res["passed"] is True
    assert res["input_shape"] == [1, 3, 64, 64]


# ----------------------------------------------------------------------------------------------
# Ctrl-C

_SIGINT_PRELUDE = """
import runpy, signal, sys
inherited = (signal.getsignal(signal.SIGINT), signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))
print(f"inherited SIGINT handler/blocked: {inherited}", file=sys.stderr, flush=True)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ["visionzoo", *sys.argv[1:]]
runpy.run_module("visionzoo", run_name="__main__", alter_sys=True)
"""


def test_sigint_benchmark_keeps_finished_models(tmp_path):
    out = tmp_path / "bench.jsonl"
    models = ["test_resnet", "test_convnext", "test_vit"]
    # the child starts with Python's own Ctrl-C handler and SIGINT unblocked, and says what it inherited: in
    # three full CI runs on 2026-12-03 this process ran all models through repeated SIGINTs (so it inherited an
    # ignored or blocked SIGINT from that xdist worker, cause not found); alone and under load it never did
    cmd = [sys.executable, "-c", _SIGINT_PRELUDE]
    cmd += ["benchmark", *models, "--mode", "infer", "--img-size", "32", "--min-time", "2", "--warmup", "1",
                 "--repeats", "1", "--max-runs", "1000000", "--threads", "1", "--no-progress", "--out", str(out),
                 "--json"]  # --max-runs: the default 50 calls of a tiny model end before --min-time
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            cwd=tmp_path)
    _wait_for(lambda: out.exists() and out.read_text().count("\n") >= 1, proc, "first benchmark record")
    # Ctrl-C during a later model's >= 2 s of timing, pressed again every 0.5 s as a user would (repeats
    # after the first are ignored while the CLI shuts down)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, f"{stderr}\nrecords: {stdout[-3000:]}"  # what ran, if it was not interrupted
    records = json.loads(stdout)  # --json still prints what was measured
    done = [r["model"] for r in records]
    assert 1 <= len(done) < len(models) and done == models[:len(done)] and records[0]["infer_step_ms"] > 0
    stderr = "\n".join(ln for ln in stderr.splitlines() if not ln.startswith("inherited SIGINT"))
    line = _clean_error(stderr, "visionzoo: interrupted")
    assert f"{len(done)} model(s) measured" in line and str(out) in line and "cache" in line
    # what was measured is kept: in --out and in the measurement cache
    assert [json.loads(x)["model"] for x in out.read_text().splitlines()] == done
    cached = (tmp_path / "cache" / "bench" / "measurements.jsonl").read_text().splitlines()
    assert [json.loads(x)["model"] for x in cached] == done


def test_sigint_train_then_resume_and_validate_json(tmp_path, image_folder):
    from visionzoo.train.checkpoint import load_training_checkpoint

    run = tmp_path / "run"
    base = ["--model", "test_resnet", "--data", str(image_folder), "--img-size", "32", "--batch-size", "4",
            "--workers", "0", "--threads", "1", "--no-progress", "--output", str(run)]
    proc = subprocess.Popen(CMD + ["train", *base, "--epochs", "1000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=tmp_path)
    _wait_for(lambda: (run / "last.pth").exists(), proc, "first checkpoint")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, stderr
    line = _clean_error(stderr, "visionzoo: interrupted")
    assert str(run / "last.pth") in line and "--resume" in line
    done = load_training_checkpoint(run / "last.pth")["epoch"] + 1  # the partial run's checkpoint is kept
    assert 1 <= done < 1000

    # resume it for one more epoch; --json: stdout is the result object alone, the log went to stderr
    r = _run(["train", *base, "--epochs", str(done + 1), "--resume", "auto", "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["epoch"] == done + 1 and result["output"] == str(run) and "resumed from" in r.stderr

    r = _run(["validate", "--checkpoint", str(run / "last.pth"), "--data", str(image_folder), "--workers", "0",
              "--json"], tmp_path)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["model"] == "test_resnet" and v["images"] == 12 and 0 <= v["top1"] <= 100


# ----------------------------------------------------------------------------------------------
# shell completion (argcomplete)

def test_shell_completion(tmp_path):
    pytest.importorskip("argcomplete")
    got = {}
    for line in ("visionzoo info resnet1", "visionzoo train --model convnext_atto.", "visionzoo list --module conv",
                 "visionzoo exp"):
        out = tmp_path / "completions.txt"
        env = _env(tmp_path, _ARGCOMPLETE="1", _ARGCOMPLETE_IFS="\n", COMP_LINE=line, COMP_POINT=str(len(line)),
                   _ARGCOMPLETE_STDOUT_FILENAME=str(out))
        r = subprocess.run(CMD, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        got[line] = out.read_text().split()
    assert {"resnet18", "resnet101"} <= set(got["visionzoo info resnet1"])
    assert "convnext_atto.d2_in1k" in got["visionzoo train --model convnext_atto."]
    from visionzoo import list_modules
    assert got["visionzoo list --module conv"] == [m for m in list_modules() if m.startswith("conv")]
    assert got["visionzoo exp"] == ["export"]


def test_cli_choice_lists_match_the_library():
    """The CLI repeats a few choice lists so its parser needs no torch; they must not drift."""
    from visionzoo import export as export_mod
    from visionzoo.cli import export as cli_export
    from visionzoo.cli import train as cli_train
    from visionzoo.data.transforms import PIL_INTERP
    from visionzoo.train.model import HEADS
    from visionzoo.train.optim import OPTIMIZERS
    from visionzoo.train.scheduler import SCHEDULES

    assert cli_train.HEADS == tuple(HEADS) and cli_train.OPTIMIZERS == tuple(OPTIMIZERS)
    assert cli_train.SCHEDULES == tuple(SCHEDULES) and cli_train.INTERPOLATIONS == tuple(sorted(PIL_INTERP))
    assert cli_export.FORMATS == tuple(export_mod.FORMATS)
    assert (cli_export.DEFAULT_ATOL, cli_export.DEFAULT_RTOL) == (export_mod.DEFAULT_ATOL, export_mod.DEFAULT_RTOL)


def test_docs_cover_every_command_and_option():
    """docs/cli.md documents each command and each of its options; result commands have --json."""
    import argparse

    from visionzoo.cli.main import COMMANDS, build_parser

    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    subparsers = build_parser().get_default("_subparsers")
    assert set(subparsers) == set(COMMANDS)
    for name, sp in subparsers.items():
        assert f"### `visionzoo {name}`" in doc, name
        section = doc.split(f"### `visionzoo {name}`", 1)[1].split("\n### ", 1)[0]
        options = [o for a in sp._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o.startswith("--")]
        missing = [o for o in options if f"`{o}" not in section and o != "--help"]
        assert not missing, f"docs/cli.md, visionzoo {name}: options not documented: {missing}"
        assert "--json" in options, f"visionzoo {name} has no --json"
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 130 |"):
        assert code in doc
