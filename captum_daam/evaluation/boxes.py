"""Bounding boxes through the same resize and crop as the image."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torchvision import transforms as T

from ..errors import InvalidInputError

# Transforms that do not move pixels.
_PHOTOMETRIC = (T.ToTensor, T.Normalize, T.ConvertImageDtype, T.PILToTensor)


def _resized_size(size, height: int, width: int) -> Tuple[int, int]:
    """Output (height, width) of ``torchvision.transforms.Resize(size)``."""
    if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1):
        requested = size if isinstance(size, int) else size[0]
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = requested, int(requested * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)
    return int(size[0]), int(size[1])


def boxes_through_transform(
    boxes: Tensor, image_size: Tuple[int, int], transform: object
) -> Tuple[Tensor, Tuple[int, int]]:
    """Map boxes ``(x0, y0, x1, y1)`` in pixels of an image of ``image_size``
    (height, width) through an evaluation transform (``Resize``, ``CenterCrop`` and
    photometric steps, e.g. ``timm.data.create_transform(..., is_training=False)``).

    Returns the boxes clipped to the output and the output (height, width).
    """
    steps = transform.transforms if isinstance(transform, T.Compose) else [transform]
    boxes = boxes.to(torch.float64).clone().reshape(-1, 4)
    height, width = image_size
    for step in steps:
        if isinstance(step, T.Resize):
            new_h, new_w = _resized_size(step.size, height, width)
            boxes[:, [0, 2]] *= new_w / width
            boxes[:, [1, 3]] *= new_h / height
            height, width = new_h, new_w
        elif isinstance(step, T.CenterCrop):
            crop_h, crop_w = step.size
            top = int(round((height - crop_h) / 2.0))
            left = int(round((width - crop_w) / 2.0))
            boxes[:, [0, 2]] -= left
            boxes[:, [1, 3]] -= top
            height, width = crop_h, crop_w
        elif not isinstance(step, _PHOTOMETRIC) and type(step).__name__ != "MaybeToTensor":
            raise InvalidInputError(
                f"cannot map boxes through {type(step).__name__}; use an evaluation "
                "transform made of Resize, CenterCrop and tensor conversion"
            )
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, height)
    return boxes, (height, width)


def boxes_mask(boxes: Tensor, size: Tuple[int, int]) -> Tensor:
    """Boolean (height, width) mask of the union of ``boxes`` (pixel centres inside)."""
    if (
        not isinstance(boxes, Tensor)
        or boxes.is_complex()
        or (boxes.dim() > 0 and boxes.shape[-1] != 4)
        or boxes.dim() > 2
    ):
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise InvalidInputError(
            f"boxes must be a real tensor (K, 4) as (x0, y0, x1, y1), got {shape}"
        )
    height, width = (int(s) for s in size)
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    mask = torch.zeros(height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.reshape(-1, 4).tolist():
        rows = (ys >= y0) & (ys <= y1)
        cols = (xs >= x0) & (xs <= x1)
        mask |= rows[:, None] & cols[None, :]
    return mask
