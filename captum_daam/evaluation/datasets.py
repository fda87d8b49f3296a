"""Images with their ground-truth boxes at the model's input, for localisation.

Every dataset here yields ``(image, label, boxes, image_id)``: the preprocessed image
(C, H, W), the class, the boxes (K, 4) float64 ``(x0, y0, x1, y1)`` in model-input
pixels (continuous pixel edges, moved through the same resize and crop as the image by
:func:`~captum_daam.evaluation.boxes_through_transform`) and the image's file or id.
:func:`collate_boxes` batches them, keeping the boxes a list.

Layouts read:

* **official ImageNet files** (:meth:`BoxDataset.from_official`), as in Choe et al.'s
  ``wsolevaluation`` metadata: ``localization.txt`` (``val/FILE,x0,y0,x1,y1``, one line
  per box), ``class_labels.txt`` (``val/FILE,label``) and ``image_sizes.txt``
  (``val/FILE,w,h``), plus a folder holding (some of) the images;
* **per-image XML** (:meth:`BoxDataset.from_xml`): ILSVRC / PASCAL VOC
  ``<annotation>`` files with ``<object><name>n01440764</name><bndbox><xmin>...``;
  synsets are mapped to class indices with ``timm.data.ImageNetInfo()``;
* **the subset's ``boxes.csv``** (:meth:`BoxDataset.from_subset`, the layout of
  :class:`~captum_daam.evaluation.ImageNetSubset`);
* **synthetic shapes** (:class:`SyntheticBoxes`): the embedded model's data, whose
  generator knows each object's exact box.

Official and XML boxes are inclusive pixel indices (the last covered column and row);
they are converted to pixel edges by adding one to ``x1`` and ``y1`` (and subtracting
the index ``origin`` of the first pixel, 1 for PASCAL VOC). When an image file is not
of the size the boxes were annotated on (images prescaled for distribution), the boxes
are scaled to the file first.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .boxes import boxes_through_transform
from .imagenet import load_subset_boxes

PathLike = Union[str, Path]
#: ``(image, label, boxes, image_id)``: see the module docstring.
BoxedItem = Tuple[Tensor, int, Tensor, str]

_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class AnnotatedImage:
    """One image's annotation.

    Attributes:
        file: The image's file name or relative path as the annotation names it.
        label: Class index.
        boxes: (K, 4) float64 boxes in continuous pixel edges.
        size: (height, width) of the image the boxes were drawn on; ``None`` when they
            are in the pixels of the image file itself.
    """

    file: str
    label: int
    boxes: Tensor
    size: Optional[Tuple[int, int]] = None


def _read_rows(path: Path, columns: int) -> List[List[str]]:
    if not path.is_file():
        raise ValueError(f"{path} does not exist; expected the official boxes files there")
    rows = []
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != columns:
                raise ValueError(
                    f"{path}:{number}: expected {columns} comma-separated fields, got {row!r}"
                )
            rows.append([field.strip() for field in row])
    return rows


def _inclusive_to_edges(boxes: List[List[float]], origin: float = 0.0) -> Tensor:
    """Inclusive pixel indices to continuous pixel edges, (K, 4) float64."""
    out = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4) - origin
    out[:, 2:] += 1.0
    return out


def load_official_boxes(root: PathLike, files: Sequence[str] = ()) -> List[AnnotatedImage]:
    """Annotations of the official ImageNet validation files (wsolevaluation layout).

    Args:
        root: Folder with ``localization.txt``, ``class_labels.txt`` and
            ``image_sizes.txt``.
        files: Only these images (names as in the files, e.g. ``val/ILSVRC2012_val_
            00000001.JPEG``, or their base names); all by default.

    Returns:
        One :class:`AnnotatedImage` per image with a box, sorted by file, boxes in pixel
        edges of the original image (``size`` from ``image_sizes.txt``).

    Example::

        >>> entries = load_official_boxes("data/ilsvrc2012_val_boxes")
        >>> entries[0].file, entries[0].boxes
        ('val/ILSVRC2012_val_00000001.JPEG', tensor([[111., 108., 442., 194.]], ...))
    """
    root = Path(root)
    wanted = set(files)
    labels = {f: int(v) for f, v in _read_rows(root / "class_labels.txt", 2)}
    sizes = {f: (int(h), int(w)) for f, w, h in _read_rows(root / "image_sizes.txt", 3)}
    boxes: Dict[str, List[List[float]]] = {}
    for file, *coords in _read_rows(root / "localization.txt", 5):
        if not wanted or file in wanted or Path(file).name in wanted:
            boxes.setdefault(file, []).append([float(c) for c in coords])
    entries = []
    for file in sorted(boxes):
        if file not in labels or file not in sizes:
            raise ValueError(f"{file} has boxes but no label or size in {root}")
        entries.append(AnnotatedImage(file, labels[file], _inclusive_to_edges(boxes[file]), sizes[file]))
    found = {e.file for e in entries} | {Path(e.file).name for e in entries}
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(f"no boxes in {root} for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return entries


def imagenet_synsets() -> Dict[str, int]:
    """ImageNet-1k synset (``n01440764``) -> class index, from ``timm.data.ImageNetInfo``."""
    from timm.data import ImageNetInfo

    return {name: index for index, name in enumerate(ImageNetInfo().label_names())}


def _text(node: ElementTree.Element, tag: str, path: Path) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{path}: <{node.tag}> has no <{tag}>")
    return found.text.strip()


def load_xml_boxes(
    folder: PathLike, class_index: Optional[Mapping[str, int]] = None, origin: int = 0
) -> List[AnnotatedImage]:
    """Annotations of a folder of per-image XML files (ILSVRC / PASCAL VOC).

    The image's class is its first object's ``<name>``; its boxes are those of all
    objects of that class. The file of an annotation is its XML file's stem (the
    image is looked up by stem).

    Args:
        folder: Folder of ``*.xml`` files (searched recursively).
        class_index: Object name -> class index; default ImageNet-1k synsets
            (:func:`imagenet_synsets`).
        origin: Index of the first pixel in the coordinates: 0 for ILSVRC (as in the
            official ``localization.txt``), 1 for PASCAL VOC.

    Returns:
        One :class:`AnnotatedImage` per XML file, sorted by file, boxes in pixel edges
        of the annotated size (``<size>``).

    Example::

        >>> entries = load_xml_boxes("ILSVRC/Annotations/CLS-LOC/val")
    """
    folder = Path(folder)
    paths = sorted(folder.rglob("*.xml"))
    if not paths:
        raise ValueError(f"no .xml annotation files in {folder}")
    names = imagenet_synsets() if class_index is None else dict(class_index)
    entries = []
    for path in paths:
        root = ElementTree.parse(path).getroot()
        size = root.find("size")
        if size is None:
            raise ValueError(f"{path}: no <size> element")
        hw = (int(float(_text(size, "height", path))), int(float(_text(size, "width", path))))
        objects = [(_text(o, "name", path), o) for o in root.iter("object")]
        if not objects:
            raise ValueError(f"{path}: no <object>; leave images without boxes out")
        name = objects[0][0]
        if name not in names:
            raise ValueError(
                f"{path}: object name {name!r} is not a known class; pass class_index="
                "{name: index} for non-ImageNet annotations"
            )
        coords = []
        for object_name, node in objects:
            if object_name == name:
                box = node.find("bndbox")
                if box is None:
                    raise ValueError(f"{path}: <object> without <bndbox>")
                coords.append([float(_text(box, t, path)) for t in ("xmin", "ymin", "xmax", "ymax")])
        entries.append(AnnotatedImage(path.stem, names[name], _inclusive_to_edges(coords, origin), hw))
    return entries


def _image_index(folder: Path) -> Dict[str, Path]:
    """Every image under ``folder`` by relative path, by base name and by stem."""
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist")
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

    Example::

        >>> cfg = timm.data.resolve_data_config({}, model=model)
        >>> data = BoxDataset.from_official("ilsvrc2012_val_boxes", "imagenet/val",
        ...                                 timm.data.create_transform(**cfg))
        >>> loader = DataLoader(data, batch_size=32, collate_fn=collate_boxes)
    """

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
                (index[k] for k in (entry.file, Path(entry.file).name, Path(entry.file).stem) if k in index),
                None,
            )
            if path is not None:
                self.entries.append(entry)
                self.paths.append(path)
        if entries and not self.entries:
            raise ValueError(
                f"none of the {len(entries)} annotated images is in {self.image_dir} "
                f"(e.g. {entries[0].file}); point image_dir at the images"
            )

    @classmethod
    def from_official(
        cls, boxes_dir: PathLike, image_dir: PathLike, transform: Callable, files: Sequence[str] = ()
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
    def from_subset(cls, root: PathLike, transform: Callable, files: Sequence[str] = ()) -> "BoxDataset":
        """The ``boxes.csv`` + ``images/`` layout of
        :class:`~captum_daam.evaluation.ImageNetSubset` (boxes in the files' pixels)."""
        root = Path(root)
        entries = [AnnotatedImage(e.file, e.label, e.boxes) for e in load_subset_boxes(root / "boxes.csv")]
        if files:
            wanted = set(files)
            entries = [e for e in entries if e.file in wanted]
        return cls(entries, root / "images", transform)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> BoxedItem:
        entry = self.entries[index]
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
            size = (image.height, image.width)
            pixels = self.transform(image)
        boxes = entry.boxes.to(torch.float64).clone()
        if entry.size is not None and tuple(entry.size) != size:
            boxes[:, [0, 2]] *= size[1] / entry.size[1]
            boxes[:, [1, 3]] *= size[0] / entry.size[0]
        boxes, _ = boxes_through_transform(boxes, size, self.transform)
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
        return image, int(label), box.to(torch.float64).reshape(1, 4), f"synthetic-{self.shapes.seed}-{index}"


def collate_boxes(batch: Sequence[BoxedItem]) -> Tuple[Tensor, Tensor, List[Tensor], List[str]]:
    """Batch box-dataset items: images stacked (N, C, H, W), labels (N,) long, boxes a
    list of N tensors (K_i, 4), ids a list. For ``DataLoader(collate_fn=...)``.

    Example::

        >>> images, labels, boxes, ids = next(iter(DataLoader(data, 8, collate_fn=collate_boxes)))
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    images, labels, boxes, ids = zip(*batch)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), list(boxes), list(ids)


__all__ = [
    "AnnotatedImage",
    "BoxDataset",
    "BoxedItem",
    "SyntheticBoxes",
    "collate_boxes",
    "imagenet_synsets",
    "load_official_boxes",
    "load_xml_boxes",
]
