"""Reading an image file the user named, safely: its size is read from the header and
checked against a pixel cap before anything is decoded, so an oversized image (a
decompression bomb) never takes memory, and every failure is one
:class:`~captum_daam.InvalidFileError` naming the problem.

Used by the command line (``captum-daam explain --max-pixels``) and the evaluation's box
datasets (``BoxDataset.max_pixels``, ``captum-daam evaluate --max-pixels``).
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator, Union

from .errors import InvalidFileError

#: The default cap on an image's pixels: PIL's own ``Image.MAX_IMAGE_PIXELS``
#: (89,478,485, about 9459 x 9459), which decodes to about 270 MB of RGB.
DEFAULT_MAX_PIXELS = 89_478_485

_PIL_LIMIT_LOCK = threading.Lock()


def read_image(path: Union[str, "os.PathLike[str]"], max_pixels: int = DEFAULT_MAX_PIXELS):
    """The image in ``path`` as an RGB ``PIL.Image``, decoded only once its size (read
    from the header) is within ``max_pixels``.

    Args:
        path: The image file.
        max_pixels: The largest ``width * height`` decoded; 0 for no cap. PIL's own
            decompression-bomb check is replaced by this cap while the file is read.

    Returns:
        *PIL.Image.Image* in RGB.

    Raises:
        InvalidFileError: the file cannot be read, is not an image, is truncated or
            corrupt, or is over the cap; the message names the problem.

    Example::

        >>> from captum_daam.image_files import read_image
        >>> image = read_image("cat.jpg", max_pixels=50_000_000)
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _without_pil_bomb_check():  # PIL checks the size in open() only
                opened = Image.open(path)
            with opened as image:
                # The header is read; the size decides before anything is decoded.
                pixels = image.width * image.height
                if max_pixels and pixels > max_pixels:
                    raise InvalidFileError(
                        f"image too large ({image.width} x {image.height} = {pixels:,} "
                        f"pixels, over the cap of {max_pixels:,}; raise it with "
                        "--max-pixels N or max_pixels=N, 0 for none)"
                    )
                return image.convert("RGB")
    except InvalidFileError:
        raise
    except Exception as error:  # not an image, truncated, corrupt (OSError, SyntaxError, ..)
        text = " ".join(str(error).split())[:160] or type(error).__name__
        raise InvalidFileError(f"cannot read image ({text})") from None


@contextmanager
def _without_pil_bomb_check() -> Iterator[None]:
    """PIL's own decompression-bomb check off inside the block (the cap of
    :func:`read_image` replaces it). ``Image.MAX_IMAGE_PIXELS`` is global: one lock
    serialises the switch so that concurrent readers always put PIL's limit back."""
    from PIL import Image

    with _PIL_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = limit


__all__ = ["DEFAULT_MAX_PIXELS", "read_image"]
