"""The memory bank's file: safetensors with the tensors ``features`` (M, D) and ``labels``
(M,) and the string metadata ``captum_daam=memory_bank/1``, read and written with one
:class:`~captum_daam.InvalidFileError` for every problem (missing, truncated, corrupt,
foreign, malformed, unwritable), never a third-party exception.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Tuple

import torch
from torch import Tensor

from .errors import InvalidFileError, InvalidInputError, InvalidInputTypeError
from .file_checks import not_a_file, reader_error

#: Written into every bank file, checked on load.
_FORMAT_KEY = "captum_daam"
_FORMAT_VALUE = "memory_bank/1"
#: The fix named by every error about a bank file.
_REBUILD = "rebuild it with MemoryBank.build and save it with MemoryBank.save"
_FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_bank_tensors(features: Tensor, labels: Tensor) -> None:
    """Raise :class:`InvalidInputError` unless ``features`` (M, D) floats and ``labels``
    (M,) integers make a bank (non-empty, finite)."""
    if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
        raise InvalidInputTypeError(
            "a MemoryBank holds tensors: features (M, D) and labels (M,); got "
            f"{type(features).__name__} and {type(labels).__name__}"
        )
    if features.dim() != 2:
        raise InvalidInputError(
            f"bank features must be (M, D), one row per image; got shape {tuple(features.shape)}"
        )
    if not features.is_floating_point():
        raise InvalidInputTypeError(
            f"bank features have dtype {features.dtype}; expected floating point"
        )
    if (
        labels.dim() != 1
        or labels.is_floating_point()
        or labels.dtype == torch.bool
        or labels.is_complex()
    ):
        raise InvalidInputError(
            f"bank labels must be integer class indices of shape (M,); got "
            f"{labels.dtype} of shape {tuple(labels.shape)}"
        )
    if features.shape[0] != labels.shape[0]:
        raise InvalidInputError(
            f"the bank has {features.shape[0]} feature rows but {labels.shape[0]} "
            "labels; they must match one to one"
        )
    if features.shape[0] == 0:
        raise InvalidInputError(
            "the memory bank is empty: it needs at least one labelled feature (was "
            "the dataset or loader empty?)"
        )
    if features.shape[1] == 0:
        raise InvalidInputError("bank features have 0 dimensions")
    if not bool(torch.isfinite(features).all()):
        raise InvalidInputError(
            "bank features contain NaN or infinite values; rebuild the bank (in "
            "float16, try bfloat16 or float32)"
        )


def _not_a_bank(path: str, problem: str) -> InvalidFileError:
    return InvalidFileError(f"{path} is not a captum_daam memory bank: {problem}; {_REBUILD}")


def read_bank_file(path: str) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """The tensors and metadata of the bank file at ``path``, checked, or
    :class:`InvalidFileError` naming the path, the problem and the fix."""
    from safetensors import safe_open

    kind = not_a_file(path)
    if kind is not None:
        kind = "no such file" if kind == "missing" else f"it is {kind}"
        raise InvalidFileError(
            f"cannot read memory bank {path}: {kind}; give the path of "
            "a file written by MemoryBank.save"
        )
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            keys = set(handle.keys())
            if metadata.get(_FORMAT_KEY) != _FORMAT_VALUE or keys != {"features", "labels"}:
                raise _not_a_bank(
                    path,
                    (
                        f"expected tensors 'features' and 'labels' and metadata {_FORMAT_KEY}="
                        f"{_FORMAT_VALUE!r}; found tensors {sorted(keys)[:8]}, metadata "
                        f"{_FORMAT_KEY}={str(metadata.get(_FORMAT_KEY))[:40]!r}"
                    ),
                )
            tensors = {key: handle.get_tensor(key) for key in keys}
    except InvalidFileError:
        raise
    except Exception as error:  # SafetensorError, OSError, unsupported dtypes, ...
        reason = reader_error(error)
        raise _not_a_bank(
            path,
            f"it cannot be read as a safetensors file ({reason}; "
            "truncated, corrupt or of another format)",
        ) from None
    features, labels = tensors["features"], tensors["labels"]
    if features.dtype not in _FEATURE_DTYPES or labels.dtype not in _LABEL_DTYPES:
        raise _not_a_bank(
            path,
            f"its features are {features.dtype} and its labels "
            f"{labels.dtype}; expected floating point and integer",
        )
    try:
        check_bank_tensors(features, labels)
    except InvalidInputError as error:
        raise _not_a_bank(path, str(error)) from None
    metadata.pop(_FORMAT_KEY)
    return tensors, metadata


def write_bank_file(
    path: str, features: Tensor, labels: Tensor, metadata: Mapping[str, str]
) -> None:
    """Write a bank's tensors and metadata to ``path``; :class:`InvalidFileError` naming
    the problem when it cannot be written."""
    from safetensors.torch import save_file

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        problem = "it is a folder"
    elif not os.path.isdir(folder):
        problem = f"the folder {folder} does not exist"
    else:
        try:
            save_file(
                {
                    "features": features.detach().contiguous().cpu(),
                    "labels": labels.contiguous().cpu(),
                },
                path,
                metadata={**metadata, _FORMAT_KEY: _FORMAT_VALUE},
            )
            return
        except Exception as error:  # SafetensorError wrapping the OS error
            problem = str(error).replace("Error while serializing: ", "").splitlines()[0]
    raise InvalidFileError(
        f"cannot write the memory bank to {path}: {problem}; choose a file in a writable folder"
    )


__all__ = ["check_bank_tensors", "read_bank_file", "write_bank_file"]
