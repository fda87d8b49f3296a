"""ImageNet validation images with the mask of their ground-truth boxes.

Reads the layout of ``CAPTUM_DAAM_DATA/imagenet_val_subset``: ``images/*.JPEG`` and
``boxes.csv`` with one row per box, ``file,label,img_w,img_h,orig_w,orig_h,x0,y0,x1,y1``
in the pixels of the image file (:func:`~.annotations.load_subset_boxes`). The images
and boxes are those of :meth:`BoxDataset.from_subset <.datasets.BoxDataset.from_subset>`;
the items here carry the boxes as one mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import torch
from torch import Tensor

from ..errors import InvalidFileError
from .annotations import AnnotatedImage, PathLike, load_subset_boxes
from .boxes import boxes_mask
from .datasets import BoxDataset


class ImageNetSubset(torch.utils.data.Dataset):
    """Images preprocessed by ``transform`` with labels and box masks at the model input.

    Items are ``(image, label, mask)``: the transformed image, the class, and a boolean
    (H, W) mask of the union of the boxes mapped through the same resize and crop.

    Args:
        root: The subset folder (``boxes.csv`` and ``images/``).
        transform: The model's evaluation transform (``Resize``, ``CenterCrop`` and
            tensor steps).
        files: Only these files of ``boxes.csv`` (all by default).

    Raises:
        ValueError: An image that ``boxes.csv`` names is not in ``images/``.

    Example::

        >>> subset = ImageNetSubset(data / "imagenet_val_subset", create_transform(**cfg))
        >>> image, label, mask = subset[0]
    """

    def __init__(self, root: PathLike, transform: Callable, files: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.transform = transform
        listed = load_subset_boxes(self.root / "boxes.csv", files)
        self.boxes = BoxDataset(listed, self.root / "images", transform)
        missing = sorted({e.file for e in listed} - {e.file for e in self.boxes.entries})
        if missing:
            raise InvalidFileError(
                f"{self.root / 'images'} lacks {len(missing)} of the images that "
                f"{self.root / 'boxes.csv'} names (e.g. {missing[0]}); restore them or "
                "pass files= without them"
            )

    @property
    def entries(self) -> List[AnnotatedImage]:
        """The annotation of every item, in item order."""
        return self.boxes.entries

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int) -> Tuple[Tensor, int, Tensor]:
        pixels, boxes, size = self.boxes.load(index)
        return pixels, self.boxes.entries[index].label, boxes_mask(boxes, size)


__all__ = ["ImageNetSubset", "load_subset_boxes"]
