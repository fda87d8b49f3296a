"""ImageNet validation images with their ground-truth boxes.

Reads the layout of ``CAPTUM_DAAM_DATA/imagenet_val_subset``: ``images/*.JPEG`` and
``boxes.csv`` with one row per box, ``file,label,img_w,img_h,orig_w,orig_h,x0,y0,x1,y1``
in the pixels of the image file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch
from PIL import Image
from torch import Tensor

from .boxes import boxes_mask, boxes_through_transform


@dataclass(frozen=True)
class BoxedImage:
    file: str
    label: int
    boxes: Tensor  # (K, 4) in the image file's pixels


def load_subset_boxes(csv_path: Union[str, Path]) -> List[BoxedImage]:
    """All images of a ``boxes.csv``, sorted by file name, boxes grouped per image."""
    grouped: Dict[str, Tuple[int, List[List[float]]]] = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            label, boxes = grouped.setdefault(row["file"], (int(row["label"]), []))
            boxes.append([float(row[k]) for k in ("x0", "y0", "x1", "y1")])
    return [
        BoxedImage(file, label, torch.tensor(boxes, dtype=torch.float64))
        for file, (label, boxes) in sorted(grouped.items())
    ]


class ImageNetSubset(torch.utils.data.Dataset):
    """Images preprocessed by ``transform`` with labels and box masks at the model input.

    Items are ``(image, label, mask)``: the transformed image, the class, and a boolean
    (H, W) mask of the union of the boxes mapped through the same resize and crop.
    """

    def __init__(
        self,
        root: Union[str, Path],
        transform: Callable,
        files: Sequence[str] = (),
    ) -> None:
        self.root = Path(root)
        self.transform = transform
        entries = load_subset_boxes(self.root / "boxes.csv")
        if files:
            wanted = set(files)
            entries = [e for e in entries if e.file in wanted]
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Tuple[Tensor, int, Tensor]:
        entry = self.entries[index]
        with Image.open(self.root / "images" / entry.file) as image:
            image = image.convert("RGB")
            size = (image.height, image.width)
            pixels = self.transform(image)
        boxes, out_size = boxes_through_transform(entry.boxes, size, self.transform)
        return pixels, entry.label, boxes_mask(boxes, out_size)
