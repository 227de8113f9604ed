"""Image-folder datasets (one sub-directory per class) and small built-in offline data sets.

Layouts accepted by :func:`find_split_dirs`::

    DIR/train/<class>/*.png  +  DIR/val/<class>/*.png     (also 'validation', 'test')
    DIR/<class>/*.png                                     (split into train/val by a seeded fraction)
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from torch.utils.data import Dataset

from .images import IMAGE_EXTENSIONS, MAX_PIXELS, load_image

__all__ = ["ImageFolder", "DatasetError", "find_classes", "find_split_dirs", "split_samples",
           "write_digits_folder", "builtin_dataset_dir", "BUILTIN_DATASETS", "find_unreadable_images",
           "check_images"]

Sample = tuple[str, int]


class DatasetError(ValueError):
    """A data directory is missing, empty or inconsistent."""


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted class names: the sub-directories of ``root`` (hidden ones ignored)."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data directory not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"data path is not a directory: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root} has no class sub-directories; expected {root}/<class_name>/<image files>")
    return classes


def _scan(root: Path, classes: Sequence[str], extensions: Sequence[str]) -> list[Sample]:
    samples: list[Sample] = []
    empty = []
    for idx, name in enumerate(classes):
        d = root / name
        if not d.is_dir():
            raise DatasetError(f"class {name!r} has no folder in {root}")
        files = sorted(str(p) for p in d.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
        if not files:
            empty.append(name)
        samples.extend((f, idx) for f in files)
    if empty:
        shown = ", ".join(repr(e) for e in empty[:10]) + (" ..." if len(empty) > 10 else "")
        raise DatasetError(f"{len(empty)} class folder(s) in {root} hold no images ({', '.join(extensions)}): {shown}")
    return samples


def _image_problem(path: str, max_pixels: int | None = MAX_PIXELS) -> str | None:
    """None when ``path`` decodes completely, else a short reason ('truncated', 'empty file', ...).

    JPEGs decode at 1/8 scale (libjpeg still reads every byte, so truncation is caught) to keep a
    scan of a large folder cheap; other formats decode in full.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                return f"{w}x{h} pixels, over the {max_pixels} limit"
            if img.format == "JPEG":
                img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))
            img.load()
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "truncated" in text.lower() or "end of stream" in text.lower() or "broken data stream" in text.lower():
            return "truncated"
        return text[:80]
    return None


def find_unreadable_images(paths: Iterable[str | os.PathLike], workers: int | None = None) -> list[tuple[str, str]]:
    """``[(path, reason)]`` for every file in ``paths`` that does not decode, in input order.

    Decoding runs on ``workers`` threads (Pillow releases the GIL while decoding); default:
    up to 8, one per CPU.
    """
    from concurrent.futures import ThreadPoolExecutor

    paths = [str(p) for p in paths]
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 64:
        problems = [_image_problem(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionzoo-scan") as pool:
            problems = list(pool.map(_image_problem, paths, chunksize=32))
    return [(p, why) for p, why in zip(paths, problems) if why is not None]


def check_images(*datasets: "ImageFolder | None", workers: int | None = None) -> None:
    """Decode every image of ``datasets`` once; raise one :class:`DatasetError` naming every file
    that cannot be read, so that training never stops part-way on a bad file."""
    seen: dict[str, Path] = {}
    for ds in datasets:
        if ds is not None:
            for path, _ in ds.samples:
                seen.setdefault(path, ds.root)
    bad = sorted(find_unreadable_images(list(seen), workers=workers))
    if not bad:
        return
    roots = sorted({str(seen[p]) for p, _ in bad})

    def short(p: str) -> str:
        try:
            return str(Path(p).relative_to(seen[p]))
        except ValueError:
            return p

    listed = ", ".join(f"{short(p)} ({why})" for p, why in bad)
    raise DatasetError(f"{len(bad)} unreadable image file(s) under {', '.join(roots)}; fix or remove them "
                       f"before training: {listed}")


class ImageFolder(Dataset):
    """Images under ``root/<class>/...``; items are ``(transform(image), class_index)``.

    Args:
        root: the directory holding one sub-directory per class.
        transform: PIL image -> tensor (e.g. :func:`visionzoo.data.transforms.create_transform`).
        classes: class names in index order; default: sorted sub-directory names. Passing the
            training set's classes makes a validation folder use the same indices.
        samples: a pre-computed ``[(path, class_index)]`` list (used by :meth:`subset`).
        extensions: file suffixes counted as images.

    Raises:
        DatasetError: missing directory, no class folders, or a class folder without images.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable[[Any], Any] | None = None,
                 classes: Sequence[str] | None = None, samples: Sequence[Sample] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS) -> None:
        self.root = Path(root)
        self.transform = transform
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[Sample] = (list(samples) if samples is not None
                                      else _scan(self.root, self.classes, extensions))
        if not self.samples:
            raise DatasetError(f"no images found under {self.root}")

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        img = load_image(path)
        return (self.transform(img) if self.transform is not None else img), target

    def subset(self, indices: Sequence[int], transform: Callable[[Any], Any] | None = None) -> "ImageFolder":
        """A new dataset over some samples (same classes), with its own transform."""
        return ImageFolder(self.root, transform, classes=self.classes, samples=[self.samples[i] for i in indices])

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, images={len(self)}, classes={len(self.classes)})"


def find_split_dirs(root: str | os.PathLike, train_split: str = "train",
                    val_splits: Sequence[str] = ("val", "validation", "test")) -> tuple[Path, Path | None]:
    """(train_dir, val_dir or None) for ``root``: ``root/train`` + ``root/val``, else ``root`` itself."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data directory not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"data path is not a directory: {root}")
    if (root / train_split).is_dir():
        for name in val_splits:
            if (root / name).is_dir():
                return root / train_split, root / name
        return root / train_split, None
    return root, None


def split_samples(targets: Sequence[int], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Stratified, seeded split of sample indices into (train, val); each class keeps ≥ 1 train image."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val fraction must be in (0, 1), got {val_fraction}")
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(t, []).append(i)
    rng = random.Random(seed)
    train, val = [], []
    for t in sorted(by_class):
        idx = by_class[t][:]
        rng.shuffle(idx)
        n_val = min(len(idx) - 1, int(round(len(idx) * val_fraction)))
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return sorted(train), sorted(val)


# ----------------------------------------------------------------------------------------------
# built-in offline data sets

def write_digits_folder(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0,
                        limit_per_class: int | None = None) -> Path:
    """Write scikit-learn's bundled ``load_digits`` (1797 8×8 grayscale images of 0–9) as PNGs.

    Layout: ``root/train/<digit>/*.png`` and ``root/val/<digit>/*.png`` with a stratified seeded
    split. ``limit_per_class`` keeps only the first N images per class (tiny test sets). Needs
    ``scikit-learn`` (``pip install visionzoo[test]``); no network access.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise RuntimeError("the digits data set needs scikit-learn: pip install scikit-learn") from e
    import numpy as np
    from PIL import Image

    root = Path(root)
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    targets = [int(t) for t in digits.target]
    keep = list(range(len(targets)))
    if limit_per_class is not None:
        seen: dict[int, int] = {}
        keep = []
        for i, t in enumerate(targets):
            if seen.get(t, 0) < limit_per_class:
                keep.append(i)
                seen[t] = seen.get(t, 0) + 1
    train_idx, val_idx = split_samples([targets[i] for i in keep], val_fraction, seed)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for j in idx:
            i = keep[j]
            d = tmp / split / str(targets[i])
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(d / f"{i:04d}.png")
    if root.exists():  # another process wrote it first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, root)
        except OSError:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return root


BUILTIN_DATASETS: dict[str, Callable[[Path], Path]] = {
    "digits": lambda root: write_digits_folder(root),
}


def builtin_dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Materialise a built-in data set (``'digits'``) as an image folder in the cache; return its dir."""
    if name not in BUILTIN_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; built-in: {', '.join(BUILTIN_DATASETS)} "
                           "(or pass --data DIR with one sub-directory per class)")
    base = Path(cache_dir or os.environ.get("VISIONZOO_CACHE") or Path.home() / ".cache" / "visionzoo")
    root = base / "datasets" / name
    if not (root / "train").is_dir():
        BUILTIN_DATASETS[name](root)
    return root

