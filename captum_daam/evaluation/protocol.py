"""The evaluation protocol of ``captum-daam evaluate``, apart from the command line.

* The split of the images into a **tuning** set (where each method's CAM threshold tau
  is chosen) and a **report** set (where its numbers are measured), by image id
  (:func:`split_tuning_and_report`), and the order that grows both together
  (:func:`interleave`).
* Item ids read without loading images (:func:`item_id`) and a dataset view that
  moves the images to a device (:class:`OnDevice`).
* The model-randomisation sanity checks of several methods, both modes, with their
  figures and Markdown tables (:func:`sanity_checks`).

Example::

    >>> ids = [item_id(dataset, i) for i in range(len(dataset))]
    >>> tuning, report = split_tuning_and_report(ids, "parity")
    >>> records = evaluate(model, OnDevice(dataset, device), ["daam"], "cache",
    ...                    indices=interleave(tuning, report))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from .methods import make_explainer
from .sanity import (
    MODES,
    Row,
    randomization_test,
    sanity_comparison_figure,
    sanity_figure,
    sanity_table_markdown,
)

#: How the images are split into tuning and report sets.
SPLITS = ("parity", "halves")


def split_tuning_and_report(
    ids: Sequence[str], split: str = "parity"
) -> Tuple[List[int], List[int]]:
    """Positions of the tuning and the report images, from the images' ids.

    The positions are ordered by id, so the split does not depend on the order the
    dataset lists its images in.

    Args:
        ids: One id per image (e.g. from :func:`item_id`).
        split: ``"parity"``: tune on the even positions in id order, report on the odd
            ones; ``"halves"``: tune on the first half in id order, report on the second.

    Returns:
        ``(tuning, report)``: lists of positions into ``ids``.

    Example::

        >>> split_tuning_and_report(["c", "a", "b", "d"])
        ([1, 0], [2, 3])
    """
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    if split == "parity":
        return order[0::2], order[1::2]
    half = len(ids) // 2
    return order[:half], order[half:]


def interleave(first: Sequence[int], second: Sequence[int]) -> List[int]:
    """``first[0], second[0], first[1], ...``, then the rest of the longer one.

    Evaluated in this order, both splits grow together, so an interrupted run still has
    images to tune tau on and images to report on.

    Example::

        >>> interleave([0, 1, 2], [3])
        [0, 3, 1, 2]
    """
    out = [i for pair in zip(first, second, strict=False) for i in pair]
    shorter = min(len(first), len(second))
    return out + list(first[shorter:]) + list(second[shorter:])


def item_id(dataset: object, index: int) -> str:
    """The id of item ``index``, without loading the image where the dataset allows it
    (a :class:`~captum_daam.evaluation.BoxDataset` lists its ``entries``); otherwise the
    fourth element of the item ``(image, label, boxes, image_id)``.

    Example::

        >>> ids = [item_id(dataset, i) for i in range(len(dataset))]
    """
    entries = getattr(dataset, "entries", None)
    if entries is not None:
        return str(entries[index].file)
    return str(dataset[index][3])  # type: ignore[index]


class OnDevice(torch.utils.data.Dataset):
    """A box dataset (items ``(image, label, boxes, image_id)``) whose images are moved
    to ``device`` as they are read.

    Args:
        dataset: The box dataset.
        device: Where the images go.

    Example::

        >>> image, label, boxes, image_id = OnDevice(dataset, torch.device("cuda"))[0]
    """

    def __init__(self, dataset: torch.utils.data.Dataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        image, label, boxes, image_id = self.dataset[index]
        return image.to(self.device), label, boxes, image_id


def sanity_checks(
    model: nn.Module,
    methods: Sequence[str],
    images: Tensor,
    targets: Optional[Tensor],
    out: Union[str, os.PathLike],
    method_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> List[Row]:
    """The model-randomisation sanity checks of several methods, in both modes.

    For every method, :func:`~captum_daam.evaluation.randomization_test` runs in the
    cascading and the independent mode and its figure is saved as
    ``out/sanity_<method>.png``; then ``out/sanity.md`` gets one table per method and
    ``out/sanity_spearman.png`` compares the methods. With no methods nothing is
    written.

    Args:
        model: The trained model; never modified.
        methods: Names for :func:`~captum_daam.evaluation.methods.make_explainer`.
        images: (N, C, H, W) preprocessed images.
        targets: (N,) classes to explain, or ``None`` for the model's predictions.
        out: Folder of the figures and ``sanity.md`` (it must exist).
        method_options: Options per method name, passed to ``make_explainer``.

    Returns:
        Every method's rows (as :func:`randomization_test` returns them, cascading then
        independent), each with a ``"method"`` key.

    Example::

        >>> rows = sanity_checks(model, ["daam", "gradcam"], images, labels, "eval-out")
    """
    out = Path(out)
    options = method_options or {}
    rows: List[Row] = []
    lines: List[str] = []
    for method in methods:
        mine: List[Row] = []

        def explainer_for(m: nn.Module, name: str = method) -> Any:
            return make_explainer(name, m, **options.get(name, {}))

        for mode in MODES:
            mine += randomization_test(model, explainer_for, images, targets, mode=mode)
        for row in mine:
            row["method"] = method
        sanity_figure(mine, out / f"sanity_{method}.png", title=method)
        lines += [f"### {method}", "", sanity_table_markdown(mine), ""]
        rows += mine
    if lines:
        (out / "sanity.md").write_text("\n".join(lines))
        sanity_comparison_figure(rows, out / "sanity_spearman.png")
    return rows


__all__ = [
    "SPLITS",
    "OnDevice",
    "interleave",
    "item_id",
    "sanity_checks",
    "split_tuning_and_report",
]
