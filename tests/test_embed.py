"""Embeddings (issue 24): ``visionzoo embed`` / ``visionzoo.embed``, resumable shards, torchrun, ``similar``.

* the real ``tf_efficientnet_lite0.pypi_in1k`` weights on the example photos plus transformed copies
  (crop, flip, resize, JPEG re-encode): each copy finds its original, ``--dedup`` groups them;
* a run SIGKILLed after its first shards resumes to the same output as an uninterrupted run;
* a 2-process ``torchrun`` run equals the single-process one;
* unreadable images are skipped and reported; store and search units.

Pipeline tests use the tiny ``test_resnet`` with seeded random weights (identical in every process)
and one torch thread, so the file stays fast on two busy cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("faiss")

from visionzoo.cli.main import main  # noqa: E402
from visionzoo.embeddings import build_index, dedup_groups, load_embeddings, search  # noqa: E402
from visionzoo.embeddings.run import KILL_AFTER_ENV  # noqa: E402
from visionzoo.embeddings.store import output_paths, write_shard, merge_shards  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
LITE0 = "tf_efficientnet_lite0.pypi_in1k"
TINY = ["--model", "test_resnet", "--no-pretrained", "--shard-size", "3", "--batch-size", "2", "--no-progress"]
COPIES = ("crop", "flip", "resize", "jpeg")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop(KILL_AFTER_ENV, None)
    return env


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """originals/<photo>.jpg and copies/<photo>_{crop,flip,resize,jpeg}.*"""
    from PIL import Image, ImageOps

    root = tmp_path_factory.mktemp("photos")
    (root / "originals").mkdir()
    (root / "copies").mkdir()
    for f in sorted(EXAMPLES.glob("*.jpg")):
        img = Image.open(f).convert("RGB")
        img.save(root / "originals" / f.name, quality=95)
        w, h = img.size
        img.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(root / "copies" / f"{f.stem}_crop.png")
        ImageOps.mirror(img).save(root / "copies" / f"{f.stem}_flip.png")
        img.resize((w // 2, h // 2), Image.BICUBIC).save(root / "copies" / f"{f.stem}_resize.png")
        img.save(root / "copies" / f"{f.stem}_jpeg.jpg", quality=30)
    return root


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """13 random images in two folders, plus a corrupt and an empty file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for i in range(13):
        d = root / ("a" if i % 2 else "b")
        d.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(d / f"{i:02d}.png")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_images: Path) -> Path:
    """An uninterrupted single-process run over ``tiny_images`` (the library API)."""
    import torch

    import visionzoo

    out = tmp_path_factory.mktemp("ref") / "ref.parquet"
    torch.set_num_threads(1)
    report = visionzoo.embed(tiny_images, out, model="test_resnet", pretrained=False, shard_size=3, batch_size=2,
                             workers=0, progress=False)
    assert report["embedded"] == 13 and report["images"] == 15 and report["shards"] == 5
    assert not report["resumed"] and report["world_size"] == 1
    assert {Path(f["path"]).name for f in report["failed"]} == {"broken.jpg", "empty.png"}
    assert not output_paths(out).parts.exists(), "the work folder is removed after the merge"
    return out


def _same(a: Path, b: Path) -> None:
    ea, eb = load_embeddings(a), load_embeddings(b)
    assert ea.paths == eb.paths
    assert len(set(eb.paths)) == len(eb.paths), "an image was embedded twice"
    np.testing.assert_allclose(ea.vectors, eb.vectors, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# units: store and search

def test_store_merges_shards_in_order(tmp_path):
    pytest.importorskip("pyarrow")
    rng = np.random.default_rng(1)
    for name in ("e.parquet", "e.npy"):
        p = output_paths(tmp_path / name)
        v0, v1 = rng.standard_normal((2, 4), dtype=np.float32), rng.standard_normal((1, 4), dtype=np.float32)
        write_shard(p, 1, v1, ["c"], [("bad", "not an image")])
        write_shard(p, 0, v0, ["a", "b"], [])
        assert merge_shards(p, 2, {"model": "m", "tag": "t", "normalized": False}) == 3
        e = load_embeddings(p.out)
        assert e.paths == ["a", "b", "c"] and e.model == "m" and e.tag == "t"
        np.testing.assert_array_equal(e.vectors, np.concatenate([v0, v1]))
    with pytest.raises(ValueError, match=".parquet or .npy"):
        output_paths(tmp_path / "e.csv")


def test_search_and_dedup_exact_and_hnsw_agree():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    x[10] = x[3] + 0.01 * rng.standard_normal(32)  # 3 ~ 10 ~ 20 (transitively), 7 ~ 8
    x[20] = 2 * x[10]
    x[8] = x[7] + 0.01 * rng.standard_normal(32)
    exact, hnsw = build_index(x, "exact"), build_index(x, "hnsw")
    assert (exact.kind, hnsw.kind, build_index(x, exact_max=100).kind) == ("exact", "hnsw", "hnsw")
    _, ids_e = search(exact, x[30:60], 3)
    _, ids_h = search(hnsw, x[30:60], 3)
    assert (ids_e[:, 0] == np.arange(30, 60)).all() and (ids_e == ids_h).mean() > 0.9
    assert dedup_groups(x, 0.99, exact) == dedup_groups(x, 0.99, hnsw) == [[3, 10, 20], [7, 8]]
    with pytest.raises(ValueError, match="same model"):
        search(exact, x[:2, :16])


# ----------------------------------------------------------------------------------------------
# the real lite0 weights: copies find their originals, --dedup groups them

def test_lite0_copies_find_originals_and_dedup_groups_them(tmp_path, photos, capsys):
    orig = tmp_path / "originals.parquet"
    assert main(["embed", str(photos / "originals"), "--out", str(orig), "--model", LITE0, "--workers", "0",
                 "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedded"] == 3 and report["dim"] == 1280 and (report["model"], report["tag"]) == \
        ("tf_efficientnet_lite0", "pypi_in1k")
    # query every copy against the originals: the model is taken from the file
    assert main(["similar", str(orig), str(photos / "copies"), "--topk", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["index"] == "exact" and len(res["queries"]) == 4 * 3
    for q in res["queries"]:
        stem = Path(q["image"]).stem.rsplit("_", 1)[0]
        best, *rest = q["neighbors"]
        assert Path(best["path"]).stem == stem, q
        assert best["score"] > 0.8 and all(r["score"] < 0.5 for r in rest), q

    # everything in one .npy file, L2-normalised: --dedup puts each original with its 4 copies
    allp = tmp_path / "all.npy"
    assert main(["embed", str(photos), "--out", str(allp), "--model", LITE0, "--workers", "1", "--normalize",
                 "--batch-size", "8", "--shard-size", "4", "--no-progress"]) == 0
    capsys.readouterr()
    emb = load_embeddings(allp)
    assert len(emb) == 15 and emb.normalized and (allp.with_suffix("")).with_suffix(".index.json").exists()
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert main(["similar", str(allp), "--dedup", "0.6", "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    expected = sorted(sorted([f"originals/{f.stem}"] + [f"copies/{f.stem}_{c}" for c in COPIES])
                      for f in EXAMPLES.glob("*.jpg"))
    got = sorted(sorted(f"{Path(p).parent.name}/{Path(p).stem}" for p in g) for g in groups)
    assert got == expected
    # in the whole set, each copy's nearest neighbours (itself excluded) are its own group
    index = build_index(emb.vectors)
    _, ids = search(index, emb.vectors, 5)
    for row, nn in zip(emb.paths, ids):
        own = Path(row).stem.split("_")[0]
        assert {Path(emb.paths[j]).stem.split("_")[0] for j in nn} == {own}, row


# ----------------------------------------------------------------------------------------------
# resumable: killed after its first shards, the rerun completes to the uninterrupted output

def test_kill_and_resume_equals_uninterrupted_run(tmp_path, tiny_images, reference, capsys):
    out = tmp_path / "emb.parquet"
    cmd = [sys.executable, "-m", "visionzoo", "embed", str(tiny_images), "--out", str(out), *TINY, "--workers", "1"]
    r = subprocess.run(cmd, env=dict(_env(), **{KILL_AFTER_ENV: "2"}), capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stdout + r.stderr  # SIGKILL right after the 2nd shard was committed
    parts = output_paths(out).parts
    assert sorted(p.name for p in parts.glob("shard-*.json")) == ["shard-000000.json", "shard-000001.json"]
    assert not out.exists()
    (parts / ".shard-000002.npy.tmp999").write_bytes(b"half a shard")  # what a kill mid-write leaves
    # other settings than the unfinished run's: refused, the committed shards stay
    assert main(["embed", str(tiny_images), "--out", str(out), *TINY, "--normalize"]) == 1
    assert "settings differ (normalize)" in capsys.readouterr().err
    assert main(["embed", str(tiny_images), "--out", str(out), *TINY, "--workers", "0", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["resumed"] and report["shards_done_before"] == 2 and report["images_this_run"] == 9
    assert report["embedded"] == 13 and len(report["failed"]) == 2
    assert "skipped" in captured.err and "broken.jpg" in captured.err and "empty.png" in captured.err
    assert not parts.exists()
    _same(reference, out)
    # a finished output is not overwritten by accident
    assert main(["embed", str(tiny_images), "--out", str(out), *TINY]) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_file_list_and_npy_output(tmp_path, tiny_images, reference):
    ref = load_embeddings(reference)
    listed = tmp_path / "files.txt"
    listed.write_text("# three images, one twice\n" + "\n".join([ref.paths[4], ref.paths[0], ref.paths[4]]) + "\n")
    out = tmp_path / "few.npy"
    assert main(["embed", "--file-list", str(listed), "--out", str(out), *TINY, "--workers", "0"]) == 0
    e = load_embeddings(out)
    assert e.paths == [ref.paths[4], ref.paths[0]]
    np.testing.assert_allclose(e.vectors, ref.vectors[[4, 0]], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# torchrun: two processes take disjoint shards, rank 0 merges; equal to one process

def test_torchrun_two_processes(tmp_path, tiny_images, reference):
    out = tmp_path / "ddp.parquet"
    agent = ("import faulthandler, sys; faulthandler.dump_traceback_later(240, exit=True); "
             "from torch.distributed.run import main; sys.exit(main())")
    cmd = [sys.executable, "-c", agent, "--standalone", "--nproc_per_node", "2", "-m", "visionzoo", "embed",
           str(tiny_images), "--out", str(out), *TINY, "--workers", "0", "--json"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    reports = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1, "only rank 0 reports"
    assert reports[0]["world_size"] == 2 and reports[0]["embedded"] == 13 and len(reports[0]["failed"]) == 2
    _same(reference, out)


def test_lazy_exports_and_no_eager_imports():
    code = ("import sys, visionzoo, visionzoo.embeddings as e; "
            "heavy = sorted(m for m in ('torch', 'pyarrow', 'faiss') if m in sys.modules); "
            "missing = [n for n in e.__all__ if not hasattr(e, n)]; "
            "print(heavy, missing, callable(visionzoo.embed), callable(e.search))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env())
    assert r.stdout.split("\n")[0] == "[] [] True True", r.stdout + r.stderr


def test_checkpoint_with_a_classifier_embeds_its_backbone(tmp_path, tiny_images, reference):
    import torch

    import visionzoo
    from visionzoo.embeddings import embed_images

    torch.manual_seed(3)
    trained = visionzoo.create_model("test_resnet", num_classes=7).eval()  # a "fine-tuned" model with its head
    ckpt = tmp_path / "ft.pth"
    torch.save({"state_dict": trained.state_dict(), "epoch": 1}, ckpt)
    paths = load_embeddings(reference).paths[:3]
    out = tmp_path / "ft.parquet"
    report = visionzoo.embed(None, out, model="test_resnet", checkpoint=ckpt, file_list=_write_list(tmp_path, paths),
                             workers=0, progress=False)
    assert report["checkpoint"] == str(ckpt.resolve()) and not report["pretrained"] and report["tag"] == ""
    want, _, _ = embed_images(trained, paths)  # forward_head(pre_logits=True) of the model with its classifier
    np.testing.assert_allclose(load_embeddings(out).vectors, want, atol=1e-5)


def _write_list(folder: Path, paths: list[str]) -> Path:
    f = folder / "list.txt"
    f.write_text("\n".join(paths) + "\n", encoding="utf-8")
    return f


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_optimize_modes_keep_the_embeddings(tmp_path, tiny_images, reference, mode):
    """--optimize fp32 (torch path) and int8 (ONNX Runtime, calibrated on the readable images of the
    list, skipping the corrupt ones) give nearly the same vectors as the eager run."""
    if mode == "int8":
        pytest.importorskip("onnxruntime")
    from visionzoo.embeddings.similarity import unit_rows

    out = tmp_path / f"{mode}.npy"
    assert main(["embed", str(tiny_images), "--out", str(out), *TINY, "--workers", "0", "--optimize", mode]) == 0
    ref, got = load_embeddings(reference), load_embeddings(out)
    assert got.paths == ref.paths
    assert (unit_rows(ref.vectors) * unit_rows(got.vectors)).sum(1).min() > 0.99
    assert json.loads(output_paths(out).report.read_text())["optimize"] == mode
