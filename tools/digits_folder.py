"""Write scikit-learn's bundled digits as a 32-px image folder for training checks (offline).

The digits folder of issue 20: ``load_digits`` (1797 8×8 grayscale handwritten digits, real
data) upscaled to 32 px PNGs (bicubic), split at random (seeded, stratified per class) into
1401 train / 396 val::

    python tools/digits_folder.py /tmp/digits32                        # seed 0
    python tools/digits_folder.py /tmp/digits32-s1 --seed 1            # another split
    python tools/digits_folder.py /tmp/digits-small --train-per-class 30 --size 24   # a smaller set
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from visionzoo.data.dataset import split_samples  # noqa: E402


def write_folder(root: Path, size: int = 32, val_fraction: float = 0.221, seed: int = 0,
                 train_per_class: int | None = None) -> tuple[int, int]:
    """Write ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``; returns (#train, #val).

    ``train_per_class`` keeps only that many (seeded) training images per class.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().clip(0, 255).astype(np.uint8)
    targets = [int(t) for t in d.target]
    train_idx, val_idx = split_samples(targets, val_fraction, seed)
    if train_per_class is not None:
        rng = np.random.default_rng(seed)
        keep = []
        for c in sorted(set(targets)):
            idx = [i for i in train_idx if targets[i] == c]
            keep.extend(rng.permutation(idx)[:train_per_class].tolist())
        train_idx = sorted(keep)
    if root.exists():
        shutil.rmtree(root)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        for i in idx:
            d = root / split / f"{targets[i]:02d}"
            d.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(images[i], mode="L")
            if size != img.width:
                img = img.resize((size, size), Image.Resampling.BICUBIC)
            img.save(d / f"{i:04d}.png")
    return len(train_idx), len(val_idx)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--size", type=int, default=32, help="image side in px (8 = the original images)")
    p.add_argument("--val-fraction", type=float, default=0.221, help="stratified validation fraction")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--train-per-class", type=int, default=None, help="keep only N training images per class")
    a = p.parse_args(argv)
    n_train, n_val = write_folder(a.root, a.size, a.val_fraction, a.seed, a.train_per_class)
    print(f"{a.root}: {n_train} train / {n_val} val images, {a.size} px, seed {a.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
