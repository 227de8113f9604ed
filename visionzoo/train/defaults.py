"""Training defaults read from the data and the model, so a run works without tuning flags.

Every rule here is a small pure function so that it can be tested and documented
(``docs/training.md``, "Defaults that follow the data"):

* :func:`inspect_images`: image size and colour of a sample of the training images;
* :func:`infer_img_size`: median short side, rounded to a multiple of 32, at least 32 (at least
  0.4 of the pretrained size for pretrained weights), at most the model's default input size;
* :func:`augment_strength` / :func:`augmentation`: a 0..1 strength from the image size and the
  number of training images, which sets the random-resized-crop area and aspect ranges and the
  flip (small images and small sets get a gentle crop and no flip);
* :func:`eval_crop_pct`: the eval center crop that shows objects at the training crops' mean scale;
* :func:`auto_layer_decay`: per-layer LR factor that gives the first layer 0.3 of the head's LR;
* :func:`head_warmup_steps`: length of the frozen-backbone head warm-up of ``--pretrained`` runs.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from typing import Sequence

__all__ = ["ImageStats", "inspect_images", "infer_img_size", "augment_strength", "augmentation", "eval_crop_pct",
           "auto_layer_decay", "head_warmup_steps", "SIZE_MULTIPLE", "MIN_IMG_SIZE", "PRETRAINED_MIN_FRACTION",
           "FIRST_LAYER_LR_FACTOR"]

SIZE_MULTIPLE = 32  # the output stride of most backbones
MIN_IMG_SIZE = 32  # below this most backbones pool a 1x1 map before their last stage
PRETRAINED_MIN_FRACTION = 0.4  # pretrained nets see inputs of at least this share of their size
FIRST_LAYER_LR_FACTOR = 0.3  # the stem's share of the head's LR under the automatic layer decay
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


@dataclass
class ImageStats:
    """What a sample of the training images says: median short side (px), grayscale or not."""

    count: int
    median_short_side: float
    median_width: float
    median_height: float
    grayscale: bool


def _is_gray(path: str) -> tuple[int, int, bool]:
    """(width, height, grayscale) of one image; RGB files whose channels are equal count as gray."""
    from PIL import Image, ImageChops

    with Image.open(path) as img:
        w, h = img.size
        mode = img.mode
        if mode in _GRAY_MODES:
            return w, h, True
        if mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr"):
            return w, h, False
        if img.format == "JPEG":
            img.draft("RGB", (max(1, w // 8), max(1, h // 8)))
        img = img.convert("RGB")
        img.thumbnail((64, 64))
        r, g, b = img.split()
        diff = max(ImageChops.difference(r, g).getextrema()[1], ImageChops.difference(g, b).getextrema()[1])
        return w, h, diff <= 2  # JPEG chroma noise of a gray image stays within a few levels


def inspect_images(paths: Sequence[str | os.PathLike], max_images: int = 256) -> ImageStats:
    """Sizes and colour of up to ``max_images`` images spread evenly over ``paths`` (deterministic).

    The folder is grayscale only when every sampled image is (one colour image makes it RGB).
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no images to inspect")
    step = max(1, len(paths) // max_images)
    picked = paths[::step][:max_images]
    sizes, gray = [], True
    for p in picked:
        w, h, g = _is_gray(p)
        sizes.append((w, h))
        gray = gray and g
    return ImageStats(count=len(picked), median_short_side=float(statistics.median(min(s) for s in sizes)),
                      median_width=float(statistics.median(s[0] for s in sizes)),
                      median_height=float(statistics.median(s[1] for s in sizes)), grayscale=gray)


def infer_img_size(median_short_side: float, model_size: int, pretrained: bool = False) -> int:
    """Input size for images whose median short side is ``median_short_side``.

    Rounded to the nearest multiple of 32 (the usual network stride), at least 32 px, at most
    ``model_size`` (a model is not run above the size it was designed or pretrained for; larger
    images are downscaled). 8-px digits -> 32, 32 px -> 32, 100 px -> 96, 500 px -> model size.

    With ``pretrained`` weights the floor is ``PRETRAINED_MIN_FRACTION`` (0.4) of ``model_size``
    rounded up to a multiple of 32 (96 for 224, 160 for 384): filters learned on ImageNet-scale
    objects see a 32-px image as a few pixels. Measured on 32-px digits with lite0 (3 epochs, no
    other flag): a frozen-backbone head reached loss 2.05 at 32 px, 1.09 at 64 px after the same
    43 steps; the whole run reached 95.96 % at 64 px and 97.22 % at 96 px on the same split
    (``benchmarks/results/training_defaults.md``); 96 px costs 2.25x the compute of 64 px.
    """
    size = int(round(median_short_side / SIZE_MULTIPLE)) * SIZE_MULTIPLE
    floor = MIN_IMG_SIZE
    if pretrained:
        floor = max(floor, math.ceil(PRETRAINED_MIN_FRACTION * model_size / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    size = max(floor, size)
    return int(min(size, model_size)) if model_size >= MIN_IMG_SIZE else size


def augment_strength(img_size: int, num_train: int) -> float:
    """0 (gentle) .. 1 (ImageNet-strength) augmentation from the input size and the set size.

    The mean of two terms, each clipped to [0, 1]: ``log2(img_size / 32) / log2(224 / 32)``
    (0 at 32 px, 1 at 224 px) and ``log10(num_train / 1000) / 2`` (0 at 1k images, 1 at 100k).
    Small images lose their content under a tight crop, and a few epochs on a small set cannot
    undo strong augmentation's shift between train and eval images.
    """
    size_term = math.log2(max(img_size, 1) / 32) / math.log2(224 / 32)
    data_term = math.log10(max(num_train, 1) / 1000) / 2
    clip = lambda v: min(1.0, max(0.0, v))  # noqa: E731
    return round(0.5 * (clip(size_term) + clip(data_term)), 4)


def augmentation(strength: float) -> dict[str, object]:
    """Random-resized-crop ``scale``/``ratio`` and ``hflip`` for a strength in [0, 1].

    * minimum crop area: ``0.7`` at strength 0 down to ImageNet's ``0.08`` at strength 1 (linear);
    * aspect range: ``(1/r, r)`` with ``log r`` from ``log 1.1`` to ``log 4/3`` (linear);
    * horizontal flip 0.5 from strength 0.4 on, else off (flips change the meaning of digits,
      letters and other small glyph images, and add little for a short run on a small set).
    """
    s = min(1.0, max(0.0, float(strength)))
    lo = 0.7 + s * (0.08 - 0.7)
    r = math.exp(math.log(1.1) + s * (math.log(4 / 3) - math.log(1.1)))
    return {"scale": (round(lo, 4), 1.0), "ratio": (round(1 / r, 4), round(r, 4)), "hflip": 0.5 if s >= 0.4 else 0.0}


def eval_crop_pct(scale: Sequence[float]) -> float:
    """Eval center-crop fraction for training crops of area ``scale = (lo, hi)``: ``sqrt((lo + hi) / 2)``.

    A random-resized crop of mean area ``a`` enlarges objects by ``1 / sqrt(a)`` on average; a
    center crop of that side fraction enlarges them as much at eval, so the net sees objects at
    the scale it was trained on (the train/test resolution discrepancy of Touvron et al., 2019).
    Measured on 32-px digits, lite0 pretrained at 64 px, identical training: val top-1 94.9 % with
    crop 1.0, 98.0 % with 0.875 (this rule gives 0.885).
    """
    lo, hi = float(scale[0]), float(scale[1])
    return round(math.sqrt(max(1e-4, (lo + hi) / 2)), 3)


def auto_layer_decay(num_layers: int, first_layer_factor: float = FIRST_LAYER_LR_FACTOR) -> float:
    """Layer-wise LR decay ``d`` with ``d ** (num_layers - 1) = first_layer_factor``.

    So the stem of a pretrained net trains at 0.3 of the head's LR whatever the depth (a fixed
    ``d`` such as 0.75 would give a 30-block net's stem 1e-4 of it). 0.3 rather than the 0.1 of
    ViT fine-tuning recipes: the small sets this default is for (grayscale digits, a different
    input scale) need the early filters to move; measured with lite0 at 96 px, 3 epochs on
    three splits of the digits: 97.2 % (seed 1) with 0.1, 98.5 / 98.0 / 98.7 % with 0.3.
    """
    if num_layers <= 1:
        return 1.0
    return round(first_layer_factor ** (1.0 / (num_layers - 1)), 6)


def head_warmup_steps(steps_per_epoch: int, max_steps: int = 100) -> int:
    """Steps of the frozen-backbone head warm-up: one epoch, at most ``max_steps``.

    Long enough that the new head's random weights no longer send large, meaningless gradients
    into the pretrained layers; short against any real run.
    """
    return int(max(1, min(steps_per_epoch, max_steps)))
