"""What every command shares: the user's errors, the output folder and the device."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InvalidInputError

if TYPE_CHECKING:
    import torch


class UserError(InvalidInputError):
    """A problem with what the user asked for: reported as one line, exit status 2.

    The command line reports every :class:`~captum_daam.errors.DAAMError` the same way;
    this one is for problems only the command line knows (its options and files).
    """


def one_line(error: BaseException) -> str:
    """The error's message on one line (a user error is reported as exactly one)."""
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def prepare_out(out: Path) -> None:
    """Create ``out`` and check it is writable, or raise :class:`UserError`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"cannot write to {out}: {error.strerror or error}; choose a writable --out folder"
        ) from None


def choose_device(choice: str) -> torch.device:
    """The device of ``--device auto|cpu|cuda``; ``auto`` takes CUDA when there is one."""
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    return torch.device(choice)


__all__ = ["UserError", "choose_device", "one_line", "prepare_out"]
