"""Weights files the user names: a ``.safetensors`` file or a plain ``.pth`` state dict,
read safely (``torch.load(weights_only=True)``), every problem one
:class:`~captum_daam.errors.InvalidFileError`."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Dict, Union

import torch

from ..errors import InvalidFileError
from ..file_checks import not_a_file, reader_error

_RESAVE = "re-save it with torch.save(model.state_dict()) or use .safetensors"


def _first_line(error: BaseException, skip: tuple = ()) -> str:
    """The first sentence of the first informative line of ``error`` (torch wraps its
    reason in boilerplate and advice)."""
    for line in str(error).splitlines():
        line = line.strip()
        if line and not line.startswith(skip):
            return line.split(". ")[0][:160]
    return type(error).__name__


def _read_torch(path: Path, magic: bytes) -> object:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4"
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = "Weights only load failed" in str(error)
        if refused and (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):
            named = re.search(r"GLOBAL (\S+)", str(error))
            what = f" (it asks for {named.group(1)})" if named else ""
            raise InvalidFileError(
                f"{path} is not a plain weights file: it holds Python objects that "
                f"torch.load(weights_only=True) refuses to load{what}; {_RESAVE}"
            ) from None
        reason = _first_line(
            error, ("Weights only load failed", "Please file an issue", "Check the documentation")
        )
        raise InvalidFileError(
            f"{path} is not a readable PyTorch weights file ({reason}; "
            f"truncated, corrupt or of another format); {_RESAVE}"
        ) from None
    except OSError:
        raise
    except Exception as error:  # EOFError, RuntimeError (zip), KeyError, ...
        raise InvalidFileError(
            f"{path} is not a readable PyTorch weights file ({type(error).__name__}: "
            f"{_first_line(error)}; truncated, corrupt or of another format); {_RESAVE}"
        ) from None


def _read_safetensors(path: Path) -> object:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except OSError:
        raise
    except Exception as error:  # SafetensorError, unsupported dtypes, ...
        reason = reader_error(error)
        raise InvalidFileError(
            f"{path} is not a readable .safetensors file ({reason}; truncated, corrupt or "
            "of another format); re-save it with "
            "safetensors.torch.save_file(model.state_dict(), PATH)"
        ) from None


def state_dict_from(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` or ``.pth`` file, unwrapping ``state_dict``,
    ``model`` or ``module`` entries.

    Other files are read with ``torch.load(weights_only=True)``: a file holding Python
    objects (a pickled model, or a malicious pickle) is refused, never run.

    Args:
        path: The weights file: safetensors by its suffix or its contents, anything
            else as a ``torch.save`` file.

    Returns:
        The parameter names and tensors, on the CPU.

    Raises:
        InvalidFileError: the file is missing, unreadable, truncated, corrupt, holds
            Python objects or no state dict; one line naming the file and the fix.

    Example::

        >>> state = state_dict_from("vit_small.safetensors")
        >>> model.load_state_dict(state)
    """
    path = Path(path)
    kind = not_a_file(path)
    if kind == "missing":
        raise InvalidFileError(f"weights file not found: {path}")
    if kind is not None:
        raise InvalidFileError(f"weights file {path} is {kind}; give a .safetensors or .pth file")
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
        # safetensors: an 8-byte header length, then the JSON header
        if path.suffix == ".safetensors" or head[8:9] == b"{":
            state = _read_safetensors(path)
        else:
            state = _read_torch(path, head[:4])
    except OSError as error:
        raise InvalidFileError(f"cannot read weights {path}: {error.strerror or error}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise InvalidFileError(
            f"{path} does not hold a state dict (parameter names and tensors); {_RESAVE}"
        )
    return state


def misfit(error: BaseException) -> str:
    """``load_state_dict``'s error on one line: how many keys are missing or unexpected
    (the first three named) and the size mismatches."""
    parts = []
    for line in str(error).splitlines()[1:]:
        line = line.strip().rstrip(".")
        head, _, rest = line.partition(": ")
        names = re.findall(r'"([^"]+)"', rest) if head.endswith("key(s) in state_dict") else []
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            parts.append(f"{head.split()[0].lower()} {len(names)} keys ({shown})")
        elif line:
            parts.append(line)
    text = "; ".join(parts) or " ".join(str(error).split())
    return text if len(text) <= 300 else text[:300] + " ..."


__all__ = ["misfit", "state_dict_from"]
