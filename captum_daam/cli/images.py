"""The images to explain: files and folders on the command line, read and preprocessed.

An image that cannot be read (not an image, truncated, corrupt) or that is larger than
the pixel cap is skipped and reported; its size is read from the header, before any
decoding, so an oversized image (a decompression bomb) never takes memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Sequence, Tuple, Union

from ..errors import InvalidFileError
from ..image_files import DEFAULT_MAX_PIXELS, read_image
from .common import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def collect_images(paths: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Image files from files and folders; returns (files, problems skipped)."""
    files, skipped = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                children = sorted(path.iterdir())
            except OSError as error:
                raise UserError(f"cannot list folder {path}: {error.strerror or error}") from None
            for child in children:
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(child)
                elif child.is_file():
                    skipped.append(f"{child}: not an image file, skipped")
                elif child.is_symlink() and not child.exists():
                    skipped.append(f"{child}: a broken or looping symbolic link, skipped")
        elif path.is_file():
            files.append(path)
        elif path.is_symlink():
            raise UserError(f"{path} is a broken or looping symbolic link")
        else:
            raise UserError(f"no such file or folder: {path}")
    return files, skipped


def load_images(
    files: Sequence[Path], transform: Callable, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Tuple[Path, Union[object, str]]]:
    """``(file, preprocessed image)`` per file, or ``(file, problem)`` (a string) where
    it cannot be read or is over ``max_pixels`` (see :func:`read_image`)."""
    for file in files:
        try:
            image = read_image(file, max_pixels)
        except InvalidFileError as error:
            yield file, str(error)
            continue
        yield file, transform(image)


__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "collect_images", "load_images", "read_image"]
