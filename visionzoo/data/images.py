"""Reading user images safely: clear errors for missing, unreadable, or oversized files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "load_image", "find_images", "ImageLoadError"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_PIXELS = 178_956_970  # PIL's decompression-bomb limit; larger images need an explicit opt-in


class ImageLoadError(ValueError):
    """An input could not be read as an image."""


def load_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image (any mode; transforms convert it to what the model needs).

    Raises :class:`FileNotFoundError` for a missing path and :class:`ImageLoadError` for a file
    that is not a readable image or exceeds ``max_pixels`` (decompression-bomb protection).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise ImageLoadError(f"{path} is a directory, not an image")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageLoadError(f"{path}: {w}x{h} pixels exceeds the limit of {max_pixels} "
                                     "(possible decompression bomb)")
            img.load()
            return img.copy() if img.mode != "P" else img.convert("RGBA")
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


def find_images(paths: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Expand files and directories into a sorted list of image files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out.extend(sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(p)
    return out
