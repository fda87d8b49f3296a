"""What is wrong with a path the user named as a file, and the one line to say about a
reader's error: shared by the readers of memory banks and weights files, so that every
bad file gets the same words."""

from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def not_a_file(path: PathLike) -> Optional[str]:
    """``None`` for a regular file (or a link to one); else what ``path`` is instead:
    ``"missing"``, ``"a folder"``, ``"not a regular file"`` or ``"a broken or looping
    symbolic link"``."""
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return "a folder"
    if os.path.exists(path):
        return "not a regular file"
    if os.path.islink(path):
        return "a broken or looping symbolic link"
    return "missing"


def reader_error(error: BaseException, limit: int = 200) -> str:
    """The first line of a file reader's error, without safetensors' "Error while
    deserializing header" prefix; the exception's type where it has no message."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line.replace("Error while deserializing header: ", "")[:limit]


__all__ = ["not_a_file", "reader_error"]
