"""Ground-truth box annotations: one record type and the readers of every layout.

:class:`AnnotatedImage` is the one record of an annotated image (file, class, boxes in
continuous pixel edges, the size they were drawn on). The readers:

* **the subset's ``boxes.csv``** (:func:`load_subset_boxes`): the layout of
  ``CAPTUM_DAAM_DATA/imagenet_val_subset``, one row per box,
  ``file,label,img_w,img_h,orig_w,orig_h,x0,y0,x1,y1`` in the pixels of the image file;
* **official ImageNet files** (:func:`load_official_boxes`), as in Choe et al.'s
  ``wsolevaluation`` metadata: ``localization.txt`` (``val/FILE,x0,y0,x1,y1``, one line
  per box), ``class_labels.txt`` (``val/FILE,label``) and ``image_sizes.txt``
  (``val/FILE,w,h``);
* **per-image XML** (:func:`load_xml_boxes`): ILSVRC / PASCAL VOC ``<annotation>``
  files with ``<object><name>n01440764</name><bndbox><xmin>...``; synsets are mapped to
  class indices with ``timm.data.ImageNetInfo()``.

Official and XML boxes are inclusive pixel indices (the last covered column and row);
they are converted to pixel edges by adding one to ``x1`` and ``y1`` (and subtracting
the index ``origin`` of the first pixel, 1 for PASCAL VOC).
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..errors import DAAMError, InvalidFileError, InvalidInputError

PathLike = Union[str, Path]


@dataclass(frozen=True)
class AnnotatedImage:
    """One image's annotation.

    Attributes:
        file: The image's file name or relative path as the annotation names it.
        label: Class index.
        boxes: (K, 4) float64 boxes ``(x0, y0, x1, y1)`` in continuous pixel edges.
        size: (height, width) of the image the boxes were drawn on; ``None`` when they
            are in the pixels of the image file itself.

    Example::

        >>> entry = AnnotatedImage("a.JPEG", 7, torch.tensor([[0.0, 0.0, 10.0, 20.0]]))
        >>> entry.size is None  # boxes in the file's own pixels
        True
    """

    file: str
    label: int
    boxes: Tensor
    size: Optional[Tuple[int, int]] = None


@contextmanager
def _reading(path: PathLike, expected: str) -> Iterator[None]:
    """Turn what a malformed annotation file raises (a missing column, a field that is
    not a number, broken XML, undecodable bytes) into :class:`InvalidFileError`."""
    try:
        yield
    except DAAMError:
        raise
    except FileNotFoundError:
        raise InvalidFileError(f"{path} does not exist; expected {expected} there") from None
    except (OSError, ValueError, KeyError, IndexError, csv.Error, SyntaxError) as error:
        detail = f"no column {error}" if isinstance(error, KeyError) else str(error)
        raise InvalidFileError(
            f"cannot read {path} ({type(error).__name__}: {detail}); expected {expected}"
        ) from None


def load_subset_boxes(csv_path: PathLike, files: Sequence[str] = ()) -> List[AnnotatedImage]:
    """The images of a subset's ``boxes.csv``, boxes grouped per image.

    Args:
        csv_path: The ``boxes.csv`` (columns ``file, label, x0, y0, x1, y1`` at least),
            boxes in pixel edges of the image files.
        files: Only these file names (all by default); names not in the csv are
            left out.

    Returns:
        One :class:`AnnotatedImage` per file, sorted by file name, ``size`` ``None``.

    Example::

        >>> entries = load_subset_boxes("data/imagenet_val_subset/boxes.csv")
        >>> [e.file for e in entries][:1]
        ['ILSVRC2012_val_00000001.JPEG']
    """
    grouped: Dict[str, Tuple[int, List[List[float]]]] = {}
    columns = "a csv with columns file, label, x0, y0, x1, y1"
    with _reading(csv_path, columns), open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            label, boxes = grouped.setdefault(row["file"], (int(row["label"]), []))
            boxes.append([float(row[k]) for k in ("x0", "y0", "x1", "y1")])
    wanted = set(files)
    return [
        AnnotatedImage(file, label, torch.tensor(boxes, dtype=torch.float64))
        for file, (label, boxes) in sorted(grouped.items())
        if not wanted or file in wanted
    ]


def _read_rows(path: Path, columns: int) -> List[List[str]]:
    if not path.is_file():
        raise InvalidFileError(f"{path} does not exist; expected the official boxes files there")
    rows = []
    with (
        _reading(path, f"{columns} comma-separated fields a line"),
        open(path, newline="") as handle,
    ):
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row:
                continue
            if len(row) != columns:
                raise InvalidFileError(
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
    with _reading(root / "class_labels.txt", "file,class lines"):
        labels = {f: int(v) for f, v in _read_rows(root / "class_labels.txt", 2)}
    with _reading(root / "image_sizes.txt", "file,width,height lines"):
        sizes = {f: (int(h), int(w)) for f, w, h in _read_rows(root / "image_sizes.txt", 3)}
    boxes: Dict[str, List[List[float]]] = {}
    with _reading(root / "localization.txt", "file,x0,y0,x1,y1 lines"):
        for file, *coords in _read_rows(root / "localization.txt", 5):
            if not wanted or file in wanted or Path(file).name in wanted:
                boxes.setdefault(file, []).append([float(c) for c in coords])
    entries = []
    for file in sorted(boxes):
        if file not in labels or file not in sizes:
            raise InvalidFileError(f"{file} has boxes but no label or size in {root}")
        entries.append(
            AnnotatedImage(file, labels[file], _inclusive_to_edges(boxes[file]), sizes[file])
        )
    found = {e.file for e in entries} | {Path(e.file).name for e in entries}
    missing = sorted(wanted - found)
    if missing:
        raise InvalidInputError(
            f"no boxes in {root} for {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    return entries


def imagenet_synsets() -> Dict[str, int]:
    """ImageNet-1k synset (``n01440764``) -> class index, from ``timm.data.ImageNetInfo``.

    Example::

        >>> imagenet_synsets()["n01440764"]
        0
    """
    from timm.data import ImageNetInfo

    return {name: index for index, name in enumerate(ImageNetInfo().label_names())}


def _text(node: ElementTree.Element, tag: str, path: Path) -> str:
    found = node.find(tag)
    if found is None or found.text is None:
        raise InvalidFileError(f"{path}: <{node.tag}> has no <{tag}>")
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
        raise InvalidFileError(f"no .xml annotation files in {folder}")
    names = imagenet_synsets() if class_index is None else dict(class_index)
    entries = []
    for path in paths:
        with _reading(path, "an ILSVRC / PASCAL VOC annotation"):
            entries.append(_xml_entry(path, names, origin))
    return entries


def _xml_entry(path: Path, names: Mapping[str, int], origin: int) -> AnnotatedImage:
    """One XML annotation file's image."""
    root = ElementTree.parse(path).getroot()
    size = root.find("size")
    if size is None:
        raise InvalidFileError(f"{path}: no <size> element")
    hw = (int(float(_text(size, "height", path))), int(float(_text(size, "width", path))))
    objects = [(_text(o, "name", path), o) for o in root.iter("object")]
    if not objects:
        raise InvalidFileError(f"{path}: no <object>; leave images without boxes out")
    name = objects[0][0]
    if name not in names:
        raise InvalidFileError(
            f"{path}: object name {name!r} is not a known class; pass class_index="
            "{name: index} for non-ImageNet annotations"
        )
    coords = []
    for object_name, node in objects:
        if object_name == name:
            box = node.find("bndbox")
            if box is None:
                raise InvalidFileError(f"{path}: <object> without <bndbox>")
            coords.append([float(_text(box, t, path)) for t in ("xmin", "ymin", "xmax", "ymax")])
    return AnnotatedImage(path.stem, names[name], _inclusive_to_edges(coords, origin), hw)


__all__ = [
    "AnnotatedImage",
    "PathLike",
    "imagenet_synsets",
    "load_official_boxes",
    "load_subset_boxes",
    "load_xml_boxes",
]
