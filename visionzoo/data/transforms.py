"""Image transforms with PIL and torch only (no torchvision): eval resize/crop and train augmentation."""
from __future__ import annotations

import math
import random
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["create_transform", "Compose", "ResizeShorter", "CenterCrop", "ResizeSquash", "ResizePad",
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


class ResizeShorter:
    """Resize so the shorter side equals ``size``, keeping the aspect ratio."""

    def __init__(self, size: int, interpolation: str = "bilinear") -> None:
        self.size, self.interpolation = size, interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        scale = self.size / min(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        return img.resize(new, _interp(self.interpolation)) if new != (w, h) else img

    def __repr__(self) -> str:
        return f"ResizeShorter(size={self.size}, interpolation={self.interpolation})"


class ResizeSquash:
    """Resize to exactly (h, w), ignoring the aspect ratio."""

    def __init__(self, size: tuple[int, int], interpolation: str = "bilinear") -> None:
        self.size, self.interpolation = size, interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.resize((self.size[1], self.size[0]), _interp(self.interpolation))

    def __repr__(self) -> str:
        return f"ResizeSquash(size={self.size}, interpolation={self.interpolation})"


class ResizePad:
    """Resize the longer side to fit (h, w) and pad the rest ('border' crop mode)."""

    def __init__(self, size: tuple[int, int], interpolation: str = "bilinear", fill: int = 0) -> None:
        self.size, self.interpolation, self.fill = size, interpolation, fill

    def __call__(self, img: Image.Image) -> Image.Image:
        th, tw = self.size
        w, h = img.size
        scale = min(th / h, tw / w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((nw, nh), _interp(self.interpolation))
        canvas = Image.new(img.mode, (tw, th), self.fill if img.mode in ("L", "I", "F") else (self.fill,) * len(img.getbands()))
        canvas.paste(img, ((tw - nw) // 2, (th - nh) // 2))
        return canvas

    def __repr__(self) -> str:
        return f"ResizePad(size={self.size}, interpolation={self.interpolation})"


class CenterCrop:
    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        th, tw = self.size
        w, h = img.size
        if w < tw or h < th:  # pad small images instead of failing
            img = ResizePad((max(th, h), max(tw, w)), "nearest")(img) if (w, h) != (tw, th) else img
            w, h = img.size
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
    interpolation: str = "bilinear",
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    crop_pct: float = 0.875,
    crop_mode: str = "center",
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    color_jitter: float = 0.0,
    **_: Any,
) -> Compose:
    """PIL image -> normalised tensor, matching how the pretrained weights were evaluated.

    Eval (``crop_mode``): ``center`` resizes the shorter side to ``size / crop_pct`` then center
    crops; ``squash`` resizes both sides to ``size / crop_pct`` then crops; ``border`` fits the
    image inside the crop and pads. Training: random resized crop, flip, optional color jitter.
    Accepts the dict from :func:`resolve_data_config` as keyword arguments.
    """
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
            ops = [convert, ResizePad(size, interpolation)]
        else:
            short = scaled[0] if size[0] == size[1] else min(scaled)
            ops = [convert, ResizeShorter(short, interpolation), CenterCrop(size)]
    ops += [ToTensor(), Normalize(mean, std)]
    return Compose(ops)
