"""One method on one batch of the evaluation: explain, time, measure, record.

:func:`measure` explains the images of a :class:`Batch` that still need it, upsamples
the maps to the images and measures them against the boxes (IoU at every CAM
threshold, energy inside the boxes) and against the model (deletion and insertion,
Captum's infidelity and sensitivity-max, on the images that ask for them), as
:class:`MeasureSettings` say. Every record is written to the cache as soon as it is
made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..display import upsample
from ..errors import InvalidInputError
from .cache import Record, RecordCache
from .faithfulness import captum_metrics, deletion_insertion
from .localization import box_energy, localization_ious
from .similarity import channel_maps

#: ``explain(images, targets) -> maps``, (N, 1, h, w) or (N, h, w).
Explain = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MeasureSettings:
    """What :func:`measure` measures, the same for every batch of a run.

    Attributes:
        target: ``"label"`` (explain the ground-truth class) or ``"predicted"``.
        taus: (T,) CAM thresholds of the IoUs.
        deletion_steps: Points of the deletion / insertion curves after the clean one
            (``None``: one patch per step).
        baseline: What removed patches show in deletion / insertion.
        captum_options: Keyword arguments of ``captum_metrics``.
    """

    target: str
    taus: Tensor
    deletion_steps: Optional[int] = 14
    baseline: str = "blur"
    captum_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Images of the dataset with what is known of them before any method runs.

    Attributes:
        images: (N, C, H, W) model inputs.
        labels: (N,) ground-truth classes.
        boxes: N tensors (K_i, 4) of boxes in model-input pixels.
        ids: N image ids.
        predicted: (N,) the model's top-1 classes.
        curves: N flags: whether the image gets deletion and insertion.
        metrics: N flags: whether the image gets Captum's metrics.
    """

    images: Tensor
    labels: Tensor
    boxes: List[Tensor]
    ids: List[str]
    predicted: Tensor
    curves: Sequence[bool]
    metrics: Sequence[bool]

    def targets(self, target: str) -> Tensor:
        """The classes to explain: ``labels`` for ``"label"``, else ``predicted``."""
        return self.labels if target == "label" else self.predicted


def map_batch(maps: Tensor, count: int) -> Tensor:
    """An explainer's maps as (N, 1, h, w) float on the CPU, from (N, 1, h, w) or
    (N, h, w).

    Raises:
        ValueError: Another shape, or not one map per image.

    Example::

        >>> map_batch(torch.ones(2, 7, 7), 2).shape
        torch.Size([2, 1, 7, 7])
    """
    maps = channel_maps(maps, "an explainer's maps")
    if maps.shape[0] != count:
        raise InvalidInputError(
            f"an explainer returned maps of shape {tuple(maps.shape)} for {count} images; "
            "it must return one map per image, (N, 1, h, w) or (N, h, w)"
        )
    return maps.detach().float().cpu()


def measure(
    model: nn.Module,
    explain: Explain,
    name: str,
    batch: Batch,
    which: List[int],
    settings: MeasureSettings,
    cache: RecordCache,
) -> List[Record]:
    """Explain and measure the images ``which`` of ``batch`` with method ``name``;
    write every record to ``cache`` and return them.

    Args:
        model: The classifier the maps explain.
        explain: The method.
        name: The method's name in the records.
        batch: The images, boxes and flags.
        which: Positions in ``batch`` to explain (the others are cached).
        settings: What to measure.
        cache: Where the records go.

    Returns:
        One record per image of ``which``, in order (see :func:`~.loop.evaluate`).
    """
    index = torch.tensor(which)
    images = batch.images[index]
    targets = batch.targets(settings.target)[index]
    start = time.perf_counter()
    maps = map_batch(explain(images, targets), len(which))
    seconds = (time.perf_counter() - start) / len(which)
    full = upsample(maps, (int(images.shape[-2]), int(images.shape[-1])))[:, 0]
    chosen = [batch.boxes[k] for k in which]
    ious = localization_ious(full, chosen, settings.taus)
    energy = box_energy(full, chosen)
    faithful = [row for row, k in enumerate(which) if batch.curves[k]]
    curves = None
    if faithful:
        rows = torch.tensor(faithful)
        curves = deletion_insertion(
            model,
            images[rows.to(images.device)],
            targets[rows],
            maps[rows],
            steps=settings.deletion_steps,
            baseline=settings.baseline,
        )
    measured = [row for row, k in enumerate(which) if batch.metrics[k]]
    captum: Optional[Dict[str, Tensor]] = None
    if measured:
        rows = torch.tensor(measured)
        captum = captum_metrics(
            model,
            explain,
            images[rows.to(images.device)],
            targets[rows].to(images.device),
            maps=maps[rows],
            max_examples_per_batch=len(measured),
            **settings.captum_options,
        )
    out = []
    for row, k in enumerate(which):
        record: Record = {
            "method": name,
            "id": batch.ids[k],
            "label": int(batch.labels[k]),
            "target": int(targets[row]),
            "predicted": int(batch.predicted[k]),
            "correct": bool(int(batch.predicted[k]) == int(batch.labels[k])),
            "ious": [round(float(v), 6) for v in ious[row]],
            "energy": float(energy[row]),
            "seconds": seconds,
        }
        if curves is not None and row in faithful:
            at = faithful.index(row)
            record.update(
                deletion_auc=float(curves.deletion_auc[at]),
                insertion_auc=float(curves.insertion_auc[at]),
                deletion=[round(float(v), 6) for v in curves.deletion[at]],
                insertion=[round(float(v), 6) for v in curves.insertion[at]],
            )
        if captum is not None and row in measured:
            at = measured.index(row)
            record.update({key: float(value[at]) for key, value in captum.items()})
        cache.write(record)
        out.append(record)
    return out


__all__ = ["Batch", "Explain", "MeasureSettings", "map_batch", "measure"]
