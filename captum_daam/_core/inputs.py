"""Checks on the images handed to an explainer, with errors that name the fix."""

from __future__ import annotations

from typing import Optional, Protocol, Tuple

import torch
from torch import Tensor


class ImageModel(Protocol):
    """What the checks need to know of a model (a
    :class:`~captum_daam.adapters.ModelAdapter` is one)."""

    @property
    def in_chans(self) -> Optional[int]:
        """Input channels the model expects, or ``None`` when unknown."""

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """Patch grid for an input of ``image_size``; ``ValueError`` naming the fix."""


def check_images(images: object, adapter: ImageModel) -> Tuple[int, int]:
    """Validate an image batch for ``adapter``'s model; return its patch grid."""
    if not isinstance(images, Tensor):
        raise TypeError(
            f"inputs must be a tensor of images (N, C, H, W), got {type(images).__name__}"
        )
    if images.dim() != 4:
        hint = " add a batch dimension with x.unsqueeze(0)" if images.dim() == 3 else ""
        raise ValueError(
            f"inputs must be a batch of images of shape (N, C, H, W), got shape "
            f"{tuple(images.shape)};{hint or ' reshape your inputs'}"
        )
    if not torch.is_floating_point(images):
        raise TypeError(
            f"inputs have dtype {images.dtype}; convert images to floating point with the "
            "model's preprocessing (e.g. timm.data.create_transform)"
        )
    if images.shape[0] == 0:
        raise ValueError("inputs hold no images (batch size 0)")
    expected = adapter.in_chans
    if expected is not None and images.shape[1] != expected:
        raise ValueError(
            f"inputs have {images.shape[1]} channels but the model expects {expected}; "
            "inputs must be (N, C, H, W)"
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError(
            "inputs contain NaN or infinite values; clean or re-normalise them first"
        )
    return adapter.grid_size((int(images.shape[2]), int(images.shape[3])))
