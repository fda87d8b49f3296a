"""Datasets of images with their ground-truth boxes at the model's input, for localisation.

Every dataset here yields ``(image, label, boxes, image_id)``: the preprocessed image
(C, H, W), the class, the boxes (K, 4) float64 ``(x0, y0, x1, y1)`` in model-input
pixels (continuous pixel edges, moved through the same resize and crop as the image by
:func:`~captum_daam.evaluation.boxes_through_transform`) and the image's file or id.
:func:`collate_boxes` batches them, keeping the boxes a list.

* :class:`BoxDataset`: image files with :class:`~.annotations.AnnotatedImage` records,
  read from any layout of :mod:`.annotations` (:meth:`BoxDataset.from_official`,
  :meth:`BoxDataset.from_xml`, :meth:`BoxDataset.from_subset`). When an image file is
  not of the size the boxes were annotated on (images prescaled for distribution), the
  boxes are scaled to the file first.
* :class:`SyntheticBoxes`: the embedded model's procedural shapes, whose generator knows
  each object's exact box.

The records and readers are re-exported here (``AnnotatedImage``,
``load_official_boxes``, ``load_xml_boxes``, ``load_subset_boxes``,
``imagenet_synsets``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InvalidFileError, InvalidInputError
from ..image_files import DEFAULT_MAX_PIXELS, read_image
from .annotations import (
    AnnotatedImage,
    PathLike,
    imagenet_synsets,
    load_official_boxes,
    load_subset_boxes,
    load_xml_boxes,
)
from .boxes import boxes_through_transform

#: ``(image, label, boxes, image_id)``: see the module docstring.
BoxedItem = Tuple[Tensor, int, Tensor, str]

_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _image_index(folder: Path) -> Dict[str, Path]:
    """Every image under ``folder`` by relative path, by base name and by stem."""
    if not folder.is_dir():
        raise InvalidFileError(f"image folder {folder} does not exist")
    index: Dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file():
            for key in (path.relative_to(folder).as_posix(), path.name, path.stem):
                index.setdefault(key, path)
    return index


class BoxDataset(Dataset):
    """Image files with ground-truth boxes, preprocessed for a model.

    Items are ``(image, label, boxes, file)`` (see the module docstring): the image
    through ``transform``, and its boxes through the same resize and crop. Build it
    from a layout with :meth:`from_official`, :meth:`from_xml` or :meth:`from_subset`,
    or from :class:`AnnotatedImage` entries and an image folder.

    Args:
        entries: The annotations; an image is found in ``image_dir`` by the entry's
            relative path, base name or stem. Entries without an image are left out
            (a folder may hold part of ImageNet); none found is an error.
        image_dir: Folder of the images (searched recursively).
        transform: The model's evaluation transform (``Resize``, ``CenterCrop`` and
            tensor steps, e.g. ``timm.data.create_transform(**cfg, is_training=False)``).

    Attributes:
        max_pixels: The largest image (``width * height``, read from the file's header)
            that is decoded; a larger one raises
            :class:`~captum_daam.InvalidFileError` when its item is read. Default
            :data:`captum_daam.image_files.DEFAULT_MAX_PIXELS`; 0 for no cap.

    Example::

        >>> cfg = timm.data.resolve_data_config({}, model=model)
        >>> data = BoxDataset.from_official("ilsvrc2012_val_boxes", "imagenet/val",
        ...                                 timm.data.create_transform(**cfg))
        >>> loader = DataLoader(data, batch_size=32, collate_fn=collate_boxes)
    """

    max_pixels: int = DEFAULT_MAX_PIXELS

    def __init__(
        self, entries: Sequence[AnnotatedImage], image_dir: PathLike, transform: Callable
    ) -> None:
        self.image_dir = Path(image_dir)
        self.transform = transform
        index = _image_index(self.image_dir)
        self.entries: List[AnnotatedImage] = []
        self.paths: List[Path] = []
        for entry in entries:
            path = next(
                (
                    index[k]
                    for k in (entry.file, Path(entry.file).name, Path(entry.file).stem)
                    if k in index
                ),
                None,
            )
            if path is not None:
                self.entries.append(entry)
                self.paths.append(path)
        if entries and not self.entries:
            raise InvalidFileError(
                f"none of the {len(entries)} annotated images is in {self.image_dir} "
                f"(e.g. {entries[0].file}); point image_dir at the images"
            )

    @classmethod
    def from_official(
        cls,
        boxes_dir: PathLike,
        image_dir: PathLike,
        transform: Callable,
        files: Sequence[str] = (),
    ) -> "BoxDataset":
        """The official txt files (:func:`load_official_boxes`) and an image folder."""
        return cls(load_official_boxes(boxes_dir, files), image_dir, transform)

    @classmethod
    def from_xml(
        cls,
        annotation_dir: PathLike,
        image_dir: PathLike,
        transform: Callable,
        class_index: Optional[Mapping[str, int]] = None,
        origin: int = 0,
    ) -> "BoxDataset":
        """Per-image XML annotations (:func:`load_xml_boxes`) and an image folder."""
        return cls(load_xml_boxes(annotation_dir, class_index, origin), image_dir, transform)

    @classmethod
    def from_subset(
        cls, root: PathLike, transform: Callable, files: Sequence[str] = ()
    ) -> "BoxDataset":
        """The ``boxes.csv`` + ``images/`` layout of
        :class:`~captum_daam.evaluation.ImageNetSubset` (boxes in the files' pixels)."""
        root = Path(root)
        return cls(load_subset_boxes(root / "boxes.csv", files), root / "images", transform)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """The ``index``-th image through ``transform``, its boxes at the model input
        and the model input's (height, width), as the transform's geometry gives it.

        Example::

            >>> pixels, boxes, size = data.load(0)
            >>> mask = boxes_mask(boxes, size)
        """
        entry = self.entries[index]
        try:
            image = read_image(self.paths[index], self.max_pixels)
        except InvalidFileError as error:
            raise InvalidFileError(
                f"{self.paths[index]}: {error}; replace the file or leave it out"
            ) from None
        size = (image.height, image.width)
        pixels = self.transform(image)
        boxes = entry.boxes.to(torch.float64).clone()
        if entry.size is not None and tuple(entry.size) != size:
            boxes[:, [0, 2]] *= size[1] / entry.size[1]
            boxes[:, [1, 3]] *= size[0] / entry.size[0]
        boxes, out_size = boxes_through_transform(boxes, size, self.transform)
        return pixels, boxes, out_size

    def __getitem__(self, index: int) -> BoxedItem:
        pixels, boxes, _ = self.load(index)
        entry = self.entries[index]
        return pixels, entry.label, boxes, entry.file


class SyntheticBoxes(Dataset):
    """The embedded model's procedural shapes with their exact boxes, as a box dataset.

    Wraps :class:`~captum_daam.zoo.SyntheticShapes`: images are normalised with the
    embedded model's mean and std, one box per image (the object's tight box in pixel
    edges), the id is ``"synthetic-{seed}-{index}"``.

    Args:
        num_images: Dataset length.
        seed: Dataset seed (the embedded model's test split is
            ``DEFAULT_MODEL_INFO.test_seed``).
        image_size: Image side; default the embedded model's.
        clutter: Background clutter in [0, 1], as for ``SyntheticShapes``.

    Example::

        >>> data = SyntheticBoxes(64, seed=DEFAULT_MODEL_INFO.test_seed)
        >>> images, labels, boxes, ids = collate_boxes([data[i] for i in range(8)])
    """

    def __init__(
        self, num_images: int, seed: int = 0, image_size: Optional[int] = None, clutter: float = 1.0
    ) -> None:
        from ..zoo import DEFAULT_MODEL_INFO, SyntheticShapes

        size = DEFAULT_MODEL_INFO.image_size if image_size is None else int(image_size)
        self.shapes = SyntheticShapes(num_images, seed=seed, image_size=size, clutter=clutter)

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> BoxedItem:
        image, label, box = self.shapes[index]
        index = index + len(self.shapes) if index < 0 else index
        return (
            image,
            int(label),
            box.to(torch.float64).reshape(1, 4),
            f"synthetic-{self.shapes.seed}-{index}",
        )


def collate_boxes(batch: Sequence[BoxedItem]) -> Tuple[Tensor, Tensor, List[Tensor], List[str]]:
    """Batch box-dataset items: images stacked (N, C, H, W), labels (N,) long, boxes a
    list of N tensors (K_i, 4), ids a list. For ``DataLoader(collate_fn=...)``.

    Example::

        >>> images, labels, boxes, ids = next(iter(DataLoader(data, 8, collate_fn=collate_boxes)))
    """
    if not batch:
        raise InvalidInputError("cannot collate an empty batch")
    images, labels, boxes, ids = zip(*batch, strict=False)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), list(boxes), list(ids)


__all__ = [
    "AnnotatedImage",
    "BoxDataset",
    "BoxedItem",
    "SyntheticBoxes",
    "collate_boxes",
    "imagenet_synsets",
    "load_official_boxes",
    "load_subset_boxes",
    "load_xml_boxes",
]
