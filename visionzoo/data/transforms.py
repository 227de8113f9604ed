"""Image transforms with PIL and torch only (no torchvision): eval resize/crop and train augmentation."""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["create_transform", "Compose", "ResizeShorter", "ResizeKeepRatio", "CenterCrop", "ResizeSquash", "ResizePad",
           "RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize", "PIL_INTERP"]

PIL_INTERP = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def _interp(name: str) -> Image.Resampling:
    try:
        return PIL_INTERP[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; choose from {', '.join(PIL_INTERP)}") from None


class Compose:
    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"  {t!r}\n" for t in self.transforms) + ")"


def _pad_to(img: Image.Image, size: tuple[int, int], fill: int | Sequence[int] = 0) -> Image.Image:
    """Pad ``img`` with ``fill`` to at least (h, w): the extra rows/columns split evenly, the odd
    one going to the bottom/right."""
    th, tw = size
    w, h = img.size
    if w >= tw and h >= th:
        return img
    nw, nh = max(w, tw), max(h, th)
    if isinstance(fill, (int, float)):
        color: Any = int(fill) if len(img.getbands()) == 1 else (int(fill),) * len(img.getbands())
    else:
        color = tuple(int(v) for v in fill)
        if len(img.getbands()) == 1:
            color = color[0]
    canvas = Image.new(img.mode, (nw, nh), color)
    canvas.paste(img, ((nw - w) // 2, (nh - h) // 2))
    return canvas


class ResizeShorter:
    """Resize so the shorter side equals ``size``, keeping the aspect ratio.

    The longer side is ``int(size * long / short)`` (truncated, as in the reference pipeline).
    """

    def __init__(self, size: int, interpolation: str = "bilinear") -> None:
        self.size, self.interpolation = size, interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if w <= h:
            new = (self.size, int(self.size * h / w))
        else:
            new = (int(self.size * w / h), self.size)
        return img.resize(new, _interp(self.interpolation)) if new != (w, h) else img

    def __repr__(self) -> str:
        return f"ResizeShorter(size={self.size}, interpolation={self.interpolation})"


class ResizeKeepRatio:
    """Scale by one factor so the image covers (``longest=0``) or fits in (``longest=1``) the
    target (h, w); each side is ``round(side / ratio)`` with ``ratio`` the per-side ratio picked."""

    def __init__(self, size: tuple[int, int], interpolation: str = "bilinear", longest: float = 0.0) -> None:
        self.size, self.interpolation, self.longest = tuple(size), interpolation, float(longest)

    def output_size(self, w: int, h: int) -> tuple[int, int]:
        rh, rw = h / self.size[0], w / self.size[1]
        ratio = max(rh, rw) * self.longest + min(rh, rw) * (1.0 - self.longest)
        return round(w / ratio), round(h / ratio)

    def __call__(self, img: Image.Image) -> Image.Image:
        new = self.output_size(*img.size)
        return img.resize(new, _interp(self.interpolation)) if new != img.size else img

    def __repr__(self) -> str:
        return f"ResizeKeepRatio(size={self.size}, interpolation={self.interpolation}, longest={self.longest})"


class ResizeSquash:
    """Resize to exactly (h, w), ignoring the aspect ratio."""

    def __init__(self, size: tuple[int, int], interpolation: str = "bilinear") -> None:
        self.size, self.interpolation = size, interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        new = (self.size[1], self.size[0])
        return img.resize(new, _interp(self.interpolation)) if new != img.size else img

    def __repr__(self) -> str:
        return f"ResizeSquash(size={self.size}, interpolation={self.interpolation})"


class ResizePad:
    """Fit the image inside (h, w) keeping the aspect ratio, then pad to (h, w) with ``fill``."""

    def __init__(self, size: tuple[int, int], interpolation: str = "bilinear",
                 fill: int | Sequence[int] = 0) -> None:
        self.size, self.interpolation, self.fill = tuple(size), interpolation, fill

    def __call__(self, img: Image.Image) -> Image.Image:
        img = ResizeKeepRatio(self.size, self.interpolation, longest=1.0)(img)
        return CenterCrop(self.size, fill=self.fill)(img)

    def __repr__(self) -> str:
        return f"ResizePad(size={self.size}, interpolation={self.interpolation})"


class CenterCrop:
    """Crop the central (h, w); an image smaller than that is first padded with ``fill``.

    The crop offset is ``int(round((side - crop) / 2))`` per side.
    """

    def __init__(self, size: tuple[int, int], fill: int | Sequence[int] = 0) -> None:
        self.size, self.fill = tuple(size), fill

    def __call__(self, img: Image.Image) -> Image.Image:
        th, tw = self.size
        img = _pad_to(img, (th, tw), self.fill)
        w, h = img.size
        if (w, h) == (tw, th):
            return img
        left, top = int(round((w - tw) / 2.0)), int(round((h - th) / 2.0))
        return img.crop((left, top, left + tw, top + th))

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` and aspect ratio in ``ratio``, resize to ``size``."""

    def __init__(self, size: tuple[int, int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), interpolation: str = "bilinear") -> None:
        self.size, self.scale, self.ratio, self.interpolation = size, scale, ratio, interpolation

    def params(self, img: Image.Image) -> tuple[int, int, int, int]:
        w, h = img.size
        area = w * h
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return random.randint(0, h - ch), random.randint(0, w - cw), ch, cw
        # fallback: central crop at the nearest allowed aspect ratio
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left, ch, cw = self.params(img)
        img = img.crop((left, top, left + cw, top + ch))
        return img.resize((self.size[1], self.size[0]), _interp(self.interpolation))

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < self.p else img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness/contrast/saturation scaling by factors in ``[1 - s, 1 + s]``."""

    def __init__(self, strength: float = 0.4) -> None:
        self.strength = strength

    def __call__(self, img: Image.Image) -> Image.Image:
        from PIL import ImageEnhance

        ops = [ImageEnhance.Brightness, ImageEnhance.Contrast]
        if img.mode == "RGB":
            ops.append(ImageEnhance.Color)
        random.shuffle(ops)
        for op in ops:
            img = op(img).enhance(random.uniform(1 - self.strength, 1 + self.strength))
        return img

    def __repr__(self) -> str:
        return f"ColorJitter(strength={self.strength})"


class ToTensor:
    """PIL image -> float tensor ``[C, H, W]`` in [0, 1]."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)

    def __repr__(self) -> str:
        return "ToTensor()"


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.mean.shape[0]:
            raise ValueError(f"image has {x.shape[0]} channels but normalisation expects {self.mean.shape[0]}")
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class ConvertMode:
    """Convert to the PIL mode a model needs: 'L' for 1 channel, 'RGB' for 3 (drops alpha)."""

    def __init__(self, in_chans: int) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"images can be converted for 1 or 3 input channels, not {in_chans}")
        self.mode = "L" if in_chans == 1 else "RGB"

    def __call__(self, img: Image.Image) -> Image.Image:
        if img.mode == self.mode:
            return img
        if img.mode in ("RGBA", "LA", "P") and self.mode == "RGB":
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, img).convert("RGB")
        return img.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def create_transform(
    input_size: int | Sequence[int] = 224,
    is_training: bool = False,
    no_aug: bool = False,
    scale: tuple[float, float] | None = (0.08, 1.0),
    ratio: tuple[float, float] | None = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    interpolation: str = "bilinear",
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    crop_pct: float | None = 0.875,
    crop_mode: str | None = "center",
    **_: Any,
) -> Compose:
    """PIL image -> normalised tensor, matching how the pretrained weights were evaluated.

    Eval (``crop_mode``), pixel-identical to the reference pipeline, with ``scaled = floor(size /
    crop_pct)``: ``center`` resizes the shorter side to ``scaled`` (the longer side truncated)
    then center crops ``size``; ``squash`` resizes both sides to ``scaled`` then crops; ``border``
    fits the whole image inside ``scaled`` then center crops or pads (with the mean colour) to
    ``size``. Training: random resized crop, flip, optional color jitter.
    Accepts the dict from :func:`resolve_data_config` as keyword arguments. The parameters
    follow the reference library's order; ``None`` means its default, ``no_aug`` makes a
    training transform a plain resize + center crop, and options visionzoo does not implement
    (e.g. ``auto_augment``, ``re_prob``) are accepted and ignored.
    """
    scale, ratio = tuple(scale or (0.08, 1.0)), tuple(ratio or (3 / 4, 4 / 3))
    crop_pct = 0.875 if crop_pct is None else crop_pct
    crop_mode = crop_mode or "center"
    if is_training and no_aug:
        is_training, crop_pct, crop_mode = False, 1.0, "center"
    if isinstance(input_size, int):
        size, in_chans = (input_size, input_size), len(mean)
    else:
        size = tuple(input_size[-2:])
        in_chans = input_size[0] if len(input_size) == 3 else len(mean)
    convert = ConvertMode(in_chans) if in_chans in (1, 3) else (lambda im: im)
    if is_training:
        ops: list[Callable] = [convert, RandomResizedCrop(size, scale, ratio, interpolation)]
        if hflip > 0:
            ops.append(RandomHorizontalFlip(hflip))
        if color_jitter > 0:
            ops.append(ColorJitter(color_jitter))
    else:
        if crop_mode not in ("center", "squash", "border"):
            raise ValueError(f"unknown crop_mode {crop_mode!r}; use center, squash or border")
        scaled = tuple(int(math.floor(s / crop_pct)) for s in size)
        if crop_mode == "squash":
            ops = [convert, ResizeSquash(scaled, interpolation), CenterCrop(size)]
        elif crop_mode == "border":
            # fit the longer side in size / crop_pct, then crop/pad to size with the mean colour
            fill = [round(255 * m) for m in mean]
            ops = [convert, ResizeKeepRatio(scaled, interpolation, longest=1.0), CenterCrop(size, fill=fill)]
        elif scaled[0] == scaled[1]:
            ops = [convert, ResizeShorter(scaled[0], interpolation), CenterCrop(size)]
        else:  # non-square target: the shorter side matched to its target side
            ops = [convert, ResizeKeepRatio(scaled, interpolation), CenterCrop(size)]
    ops += [ToTensor(), Normalize(mean, std)]
    return Compose(ops)
