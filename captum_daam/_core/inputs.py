"""Checks on the images handed to an explainer, with errors that name the fix."""

from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, Union

import torch
from torch import Tensor

from ..errors import InvalidInputError, InvalidInputTypeError


class ImageModel(Protocol):
    """What the checks need to know of a model (a
    :class:`~captum_daam.adapters.ModelAdapter` is one)."""

    @property
    def in_chans(self) -> Optional[int]:
        """Input channels the model expects, or ``None`` when unknown."""

    @property
    def input_dtype(self) -> Optional[torch.dtype]:
        """The floating dtype the model's first layer computes in, or ``None`` when the
        model converts its inputs itself (or it is unknown)."""

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """Patch grid for an input of ``image_size``; ``ValueError`` naming the fix."""


def _check_dtype(images: Tensor, expected: Optional[torch.dtype]) -> None:
    """Refuse images in another floating dtype than the model's, outside autocast (where
    torch converts them itself)."""
    if expected is None or images.dtype == expected:
        return
    if torch.is_autocast_enabled(images.device.type):
        return
    raise InvalidInputTypeError(
        f"inputs have dtype {images.dtype} but the model computes in {expected}; convert "
        f"them with images.to({expected}) (or the model with model.to({images.dtype})), "
        "or run inside torch.autocast"
    )


def check_images(images: object, adapter: ImageModel) -> Tuple[int, int]:
    """Validate an image batch for ``adapter``'s model; return its patch grid.

    Raises:
        InvalidInputTypeError: not a tensor, not a dense floating tensor, or not in the
            model's dtype.
        InvalidInputError: not (N, C, H, W), no images, the wrong channels, NaN or
            infinite values, or a size the model cannot take.
    """
    if not isinstance(images, Tensor):
        raise InvalidInputTypeError(
            f"inputs must be a tensor of images (N, C, H, W), got {type(images).__name__}"
        )
    if images.layout != torch.strided:
        raise InvalidInputTypeError(
            f"inputs are a {images.layout} tensor; pass dense images (images.to_dense())"
        )
    if images.is_meta:
        raise InvalidInputError(
            "inputs are on the meta device and hold no values; pass real images"
        )
    if images.dim() != 4:
        hint = " add a batch dimension with x.unsqueeze(0)" if images.dim() == 3 else ""
        raise InvalidInputError(
            f"inputs must be a batch of images of shape (N, C, H, W), got shape "
            f"{tuple(images.shape)};{hint or ' reshape your inputs'}"
        )
    if not torch.is_floating_point(images):
        raise InvalidInputTypeError(
            f"inputs have dtype {images.dtype}; convert images to floating point with the "
            "model's preprocessing (e.g. timm.data.create_transform)"
        )
    if images.shape[0] == 0:
        raise InvalidInputError("inputs hold no images (batch size 0)")
    expected = adapter.in_chans
    if expected is not None and images.shape[1] != expected:
        raise InvalidInputError(
            f"inputs have {images.shape[1]} channels but the model expects {expected}; "
            "inputs must be (N, C, H, W)"
        )
    _check_dtype(images, getattr(adapter, "input_dtype", None))
    if not bool(torch.isfinite(images).all()):
        raise InvalidInputError(
            "inputs contain NaN or infinite values; clean or re-normalise them first"
        )
    return adapter.grid_size((int(images.shape[2]), int(images.shape[3])))


def check_inputs(
    inputs: Union[Tensor, Tuple[Any, ...]], adapter: ImageModel
) -> Tuple[Tuple[Any, ...], Tuple[int, int]]:
    """Captum-style inputs (images, or a tuple whose first element is the images) as a
    tuple, checked with :func:`check_images`, and the images' patch grid.

    Inference tensors are copied (autograd cannot take them; the caller's stay as they
    are). Raises :class:`InvalidInputError` for an empty tuple.
    """
    if isinstance(inputs, tuple):
        if not inputs:
            raise InvalidInputError("inputs is an empty tuple; pass the image batch")
        inputs_tuple = inputs
    else:
        inputs_tuple = (inputs,)
    grid = check_images(inputs_tuple[0], adapter)
    inputs_tuple = tuple(
        t.clone() if isinstance(t, Tensor) and t.is_inference() else t for t in inputs_tuple
    )
    return inputs_tuple, grid


def require_gradients(method: str) -> None:
    """Refuse to run a gradient method inside ``torch.inference_mode()``.

    Args:
        method: The method's name, for the message.

    Raises:
        RuntimeError: inside ``torch.inference_mode()`` (``torch.no_grad()`` is fine: the
            methods enable the gradients they need).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{method} needs gradients and cannot run inside torch.inference_mode(); "
            "torch.no_grad() is fine"
        )
