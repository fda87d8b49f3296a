"""The images to explain: files and folders on the command line, read and preprocessed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Sequence, Tuple

from .common import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def collect_images(paths: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Image files from files and folders; returns (files, problems skipped)."""
    files, skipped = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(child)
                elif child.is_file():
                    skipped.append(f"{child}: not an image file, skipped")
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    return files, skipped


def load_images(files: Sequence[Path], transform: Callable) -> Iterator[Tuple[Path, object]]:
    """``(file, preprocessed image)`` per file, or ``(file, error)`` where it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    for file in files:
        try:
            with Image.open(file) as image:
                yield file, transform(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            yield file, error


__all__ = ["IMAGE_SUFFIXES", "collect_images", "load_images"]
