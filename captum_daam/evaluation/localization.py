"""Box localisation from maps: the weakly-supervised localisation (WSOL) protocol.

A map at image resolution is min-max normalised to [0, 1] and thresholded at ``tau``
(pixels with value ``>= tau``); the bounding box of the largest 8-connected component
is the predicted box, scored by its IoU with the best-matching ground-truth box of the
image. Over a set of thresholds this gives an IoU table (images, taus), from which:

* box accuracy at a threshold chosen on a *separate* split (:func:`choose_tau`), and the
  mean IoU there;
* MaxBoxAcc(δ) = max over τ of the share of images with IoU >= δ, and MaxBoxAccV2, its
  mean over δ in {0.3, 0.5, 0.7} (Choe et al., CVPR 2020, "Evaluating Weakly
  Supervised Object Localization Methods Right");
* the energy-based pointing game, the share of the map's mass inside the boxes
  (:func:`box_energy`, on :func:`~captum_daam.evaluation.energy_in_boxes`).

Box convention: continuous pixel edges, as :func:`~captum_daam.evaluation.
boxes_through_transform` returns them and as the synthetic data defines them. Pixel
(row y, column x) covers ``[x, x + 1) x [y, y + 1)``; a box ``(x0, y0, x1, y1)`` has area
``(x1 - x0) * (y1 - y0)``, and the box of a component covering columns ``c0..c1`` and
rows ``r0..r1`` (inclusive) is ``(c0, r0, c1 + 1, r1 + 1)``. Official ImageNet boxes
are inclusive pixel indices; the dataset readers add one to their far edges, so the
IoUs equal those of the inclusive ``+ 1`` formula of Choe et al.'s code.

scipy comes with the ``eval`` extra (``pip install 'captum-daam[eval]'``).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError, InvalidInputTypeError
from .boxes import boxes_mask
from .pointing import energy_in_boxes
from .similarity import channel_maps, require_extra

#: Default thresholds: 0, 0.01, ..., 0.99, as in Choe et al.'s evaluation code.
DEFAULT_TAUS: Tensor = torch.arange(100, dtype=torch.float64) / 100
#: IoU thresholds δ of MaxBoxAccV2.
DEFAULT_IOU_THRESHOLDS = (0.3, 0.5, 0.7)

TauLike = Union[Tensor, Sequence[float], np.ndarray]


def _taus(taus: Optional[TauLike]) -> np.ndarray:
    values = DEFAULT_TAUS if taus is None else taus
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise InvalidInputError("taus must be a non-empty sequence of finite thresholds in [0, 1]")
    return values


def _normalised(map2d: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant map becomes zeros."""
    low, high = map2d.min(), map2d.max()
    return (map2d - low) / (high - low) if high > low else np.zeros_like(map2d)


def _as_maps(maps: Tensor) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) maps as a float64 array (N, H, W)."""
    maps = channel_maps(maps, "maps at image resolution")[:, 0]
    array = maps.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise InvalidInputError("maps contain NaN or infinite values")
    return array


def _component_boxes(normalised: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Box of the largest 8-connected component of ``normalised >= tau`` for every tau,
    (T, 4) float64, NaN rows where no pixel reaches tau.

    One ``scipy.ndimage.label`` call labels all thresholds at once: the masks are
    stacked on a first axis that the structuring element does not connect along.
    """
    ndimage = require_extra("scipy.ndimage")
    stack = normalised[None] >= taus[:, None, None]
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within a plane, never across planes
    labels, count = ndimage.label(stack, structure=structure)
    boxes = np.full((len(taus), 4), np.nan)
    if count == 0:
        return boxes
    slices = ndimage.find_objects(labels)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    planes = np.fromiter((s[0].start for s in slices), dtype=np.int64, count=count)
    # Per plane the largest component; among equal sizes the first in raster order.
    order = np.lexsort((np.arange(count), -sizes, planes))
    first = np.ones(count, dtype=bool)
    first[1:] = planes[order][1:] != planes[order][:-1]
    for index in order[first]:
        plane, rows, cols = slices[index]
        boxes[plane.start] = (cols.start, rows.start, cols.stop, rows.stop)
    return boxes


def largest_component_boxes(map2d: Tensor, taus: Optional[TauLike] = None) -> Tensor:
    """Predicted boxes of one map at several thresholds.

    Args:
        map2d: A map (H, W) at image resolution; min-max normalised here.
        taus: Thresholds in [0, 1] (default: 0, 0.01, ..., 0.99).

    Returns:
        (len(taus), 4) float64 boxes ``(x0, y0, x1, y1)`` in pixel edges (see the
        module's box convention) of the largest 8-connected component of pixels
        ``>= tau``; a row of NaN where no pixel reaches ``tau``.

    Example::

        >>> m = torch.zeros(8, 8); m[2:4, 3:6] = 1
        >>> largest_component_boxes(m, [0.5])
        tensor([[3., 2., 6., 4.]], dtype=torch.float64)
    """
    if not isinstance(map2d, Tensor) or map2d.dim() != 2:
        shape = tuple(map2d.shape) if isinstance(map2d, Tensor) else type(map2d).__name__
        raise InvalidInputError(f"expected one map (H, W), got {shape}")
    array = _as_maps(map2d[None])[0]
    return torch.from_numpy(_component_boxes(_normalised(array), _taus(taus)))


def largest_component_box(map2d: Tensor, tau: float) -> Tensor:
    """Predicted box of one map at one threshold: :func:`largest_component_boxes` for
    a single ``tau``, (4,) float64, NaN where no pixel reaches ``tau``.

    Example::

        >>> largest_component_box(m, 0.5)
        tensor([3., 2., 6., 4.], dtype=torch.float64)
    """
    return largest_component_boxes(map2d, [float(tau)])[0]


def _iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every predicted box (T, 4) with every true box (K, 4): (T, K); a NaN or
    empty predicted box scores 0."""
    pred = np.nan_to_num(pred, nan=0.0)
    ix = np.minimum(pred[:, None, 2], truth[None, :, 2]) - np.maximum(
        pred[:, None, 0], truth[None, :, 0]
    )
    iy = np.minimum(pred[:, None, 3], truth[None, :, 3]) - np.maximum(
        pred[:, None, 1], truth[None, :, 1]
    )
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1])
    union = area_p[:, None] + area_t[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _as_tensor(values: object, what: str) -> Tensor:
    """``values`` as a float64 tensor, or :class:`InvalidInputTypeError` naming ``what``."""
    if isinstance(values, Tensor) and values.is_complex():
        raise InvalidInputTypeError(f"{what} must be real numbers, got {values.dtype}")
    try:
        return torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInputTypeError(
            f"{what} must be numbers (a tensor or nested lists), got {type(values).__name__}"
        ) from None


def _as_boxes(boxes: Tensor, what: str = "boxes") -> np.ndarray:
    boxes = _as_tensor(boxes, what)
    if boxes.dim() == 1:
        boxes = boxes[None]
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise InvalidInputError(
            f"{what} must be (K, 4) as (x0, y0, x1, y1), got shape {tuple(boxes.shape)}"
        )
    return boxes.detach().to("cpu", torch.float64).numpy()


def _check_box_count(boxes: Sequence[Tensor], count: int) -> None:
    """One entry of boxes per map, or an error naming both counts."""
    if isinstance(boxes, (Tensor, str)) or not hasattr(boxes, "__len__"):
        raise InvalidInputTypeError(
            f"boxes must be a list of {count} tensors (K, 4), one per image; got "
            f"{type(boxes).__name__}"
        )
    if len(boxes) != count:
        raise InvalidInputError(f"got {count} maps but boxes for {len(boxes)} images")


def box_iou(box: Tensor, boxes: Tensor) -> Tensor:
    """IoU of one box with each of ``boxes``, in continuous pixel edges.

    Args:
        box: (4,) box ``(x0, y0, x1, y1)``; a NaN box (no prediction) scores 0.
        boxes: (K, 4) boxes.

    Returns:
        (K,) float64 IoUs in [0, 1].

    Example::

        >>> box_iou(torch.tensor([0., 0., 2., 2.]), torch.tensor([[1., 0., 3., 2.]]))
        tensor([0.3333], dtype=torch.float64)
    """
    pred = _as_boxes(box, "box")
    if pred.shape[0] != 1:
        raise InvalidInputError(f"box must be a single box (4,), got {pred.shape[0]} boxes")
    return torch.from_numpy(_iou_matrix(pred, _as_boxes(boxes))[0])


def localization_ious(
    maps: Tensor, boxes: Sequence[Tensor], taus: Optional[TauLike] = None
) -> Tensor:
    """IoU of each map's predicted box with its image's best-matching true box, for
    every threshold.

    Each map is min-max normalised, thresholded at each ``tau`` (``>= tau``), and the
    bounding box of its largest 8-connected component is compared with every true box
    of its image; the best IoU counts. No component (e.g. a constant map at ``tau >
    0``) scores 0. About 0.1 s per 224x224 map for 100 thresholds on one CPU core.

    Args:
        maps: (N, 1, H, W) or (N, H, W) maps at image resolution (upsample patch-grid
            maps first with :func:`captum_daam.upsample`).
        boxes: N tensors (K_i, 4) of true boxes ``(x0, y0, x1, y1)`` in the maps'
            pixels, continuous edges (as :func:`boxes_through_transform` returns them);
            K_i >= 1.
        taus: Thresholds in [0, 1] (default: 0, 0.01, ..., 0.99).

    Returns:
        (N, len(taus)) float64 IoUs.

    Example::

        >>> maps = upsample(daam.attribute(images, target=labels), images.shape[-2:])
        >>> ious = localization_ious(maps, boxes)        # (N, 100)
        >>> max_box_acc(ious)                            # MaxBoxAcc at 0.3, 0.5, 0.7
    """
    arrays = _as_maps(maps)
    _check_box_count(boxes, arrays.shape[0])
    thresholds = _taus(taus)
    height, width = arrays.shape[1:]
    out = np.zeros((arrays.shape[0], len(thresholds)))
    for index, (array, image_boxes) in enumerate(zip(arrays, boxes, strict=True)):
        truth = _as_boxes(image_boxes)
        if truth.shape[0] == 0:
            raise InvalidInputError(
                f"image {index} has no true box; leave it out of the evaluation"
            )
        if truth[:, 2].max() > width + 1e-6 or truth[:, 3].max() > height + 1e-6:
            raise InvalidInputError(
                f"image {index}'s boxes reach beyond the {height}x{width} maps; maps must "
                "be at image resolution (upsample them with captum_daam.upsample) and "
                "boxes in the same pixels (boxes_through_transform)"
            )
        predicted = _component_boxes(_normalised(array), thresholds)
        out[index] = _iou_matrix(predicted, truth).max(axis=1)
    return torch.from_numpy(out)


def _as_ious(ious: Tensor) -> Tensor:
    ious = _as_tensor(ious, "IoUs")
    if ious.dim() == 1:
        ious = ious[:, None]
    if ious.dim() != 2 or ious.shape[0] == 0:
        raise InvalidInputError(
            f"expected IoUs (N, taus) for N >= 1 images, got shape {tuple(ious.shape)}"
        )
    return ious


def box_accuracy(ious: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Share of images whose IoU reaches ``iou_threshold``, per threshold tau.

    Args:
        ious: (N, T) from :func:`localization_ious`, or (N,) at one tau.
        iou_threshold: δ; an image counts when its IoU >= δ.

    Returns:
        (T,) float64 accuracies (a 0-d tensor for (N,) IoUs).

    Example::

        >>> box_accuracy(ious, 0.5)          # (100,): accuracy at every tau
    """
    flat = _as_tensor(ious, "IoUs").dim() == 1
    acc = (_as_ious(ious) >= iou_threshold).to(torch.float64).mean(dim=0)
    return acc[0] if flat else acc


def choose_tau(ious: Tensor, taus: Optional[TauLike] = None, iou_threshold: float = 0.5) -> float:
    """The threshold with the best box accuracy on a *tuning* split.

    Use IoUs of images that are not evaluated with the chosen threshold (Choe et al.
    tune on a separate split); ties go to the smallest threshold.

    Args:
        ious: (N, T) IoUs of the tuning images, from :func:`localization_ious`.
        taus: The T thresholds those IoUs were computed at (default: the default taus).
        iou_threshold: δ of the accuracy that is maximised.

    Returns:
        The chosen tau.

    Example::

        >>> tau = choose_tau(localization_ious(tune_maps, tune_boxes))
    """
    thresholds = _taus(taus)
    ious = _as_ious(ious)
    if ious.shape[1] != len(thresholds):
        raise InvalidInputError(
            f"ious have {ious.shape[1]} columns but {len(thresholds)} taus were given"
        )
    return float(thresholds[int(torch.argmax(box_accuracy(ious, iou_threshold)))])


def max_box_acc(ious: Tensor, iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS) -> Tensor:
    """MaxBoxAcc(δ) = max over tau of the share of images with IoU >= δ, for every δ.

    Choe et al. (CVPR 2020); MaxBoxAccV2 is the mean of the result over δ in
    {0.3, 0.5, 0.7}.

    Args:
        ious: (N, T) IoUs from :func:`localization_ious`.
        iou_thresholds: The δ values.

    Returns:
        (len(iou_thresholds),) float64.

    Example::

        >>> max_box_acc(ious).mean()     # MaxBoxAccV2
    """
    ious = _as_ious(ious)
    return torch.stack([box_accuracy(ious, d).max() for d in iou_thresholds])


def box_energy(maps: Tensor, boxes: Sequence[Tensor]) -> Tensor:
    """Energy-based pointing game: each map's share of (non-negative) mass inside the
    union of its image's boxes (pixel centres inside a box count).

    Args:
        maps: (N, 1, H, W) or (N, H, W) maps at image resolution.
        boxes: N tensors (K_i, 4) in the maps' pixels.

    Returns:
        (N,) energies in [0, 1] (see :func:`energy_in_boxes`).

    Example::

        >>> box_energy(upsample(final, images.shape[-2:]), boxes).mean()
    """
    arrays = torch.as_tensor(_as_maps(maps))
    _check_box_count(boxes, arrays.shape[0])
    size = (int(arrays.shape[1]), int(arrays.shape[2]))
    masks = torch.stack([boxes_mask(torch.from_numpy(_as_boxes(b)), size) for b in boxes])
    return energy_in_boxes(arrays, masks)


def localization_summary(
    ious: Tensor,
    tuning_ious: Tensor,
    taus: Optional[TauLike] = None,
    iou_threshold: float = 0.5,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    energies: Optional[Tensor] = None,
) -> Dict[str, float]:
    """All localisation numbers of one method on one evaluation split.

    Args:
        ious: (N, T) IoUs of the evaluation images.
        tuning_ious: (M, T) IoUs of a separate tuning split, at the same taus; the
            threshold is chosen there, never on ``ious``.
        taus: The T thresholds (default: the default taus).
        iou_threshold: δ of the reported box accuracy and of the tau choice.
        iou_thresholds: δ values of MaxBoxAcc.
        energies: Optional (N,) pointing-game energies (:func:`box_energy`).

    Returns:
        ``{"tau", "mean_iou", "box_acc", "max_box_acc@δ" for each δ, "max_box_acc_v2",
        "num_images"}``, plus ``"energy"`` (mean) when ``energies`` are given. Mean IoU
        and box accuracy are at the chosen tau.

    Example::

        >>> localization_summary(localization_ious(maps, boxes),
        ...                      localization_ious(tune_maps, tune_boxes))
    """
    thresholds = _taus(taus)
    ious, tuning_ious = _as_ious(ious), _as_ious(tuning_ious)
    if ious.shape[1] != len(thresholds) or tuning_ious.shape[1] != len(thresholds):
        raise InvalidInputError(
            f"ious ({ious.shape[1]} columns) and tuning_ious ({tuning_ious.shape[1]}) must "
            f"both have one column per tau ({len(thresholds)})"
        )
    tau = choose_tau(tuning_ious, thresholds, iou_threshold)
    column = int(np.flatnonzero(thresholds == tau)[0])
    maxacc = max_box_acc(ious, iou_thresholds)
    summary = {
        "tau": tau,
        "mean_iou": float(ious[:, column].mean()),
        "box_acc": float(box_accuracy(ious[:, column], iou_threshold)),
    }
    summary.update(
        {f"max_box_acc@{d:g}": float(v) for d, v in zip(iou_thresholds, maxacc, strict=True)}
    )
    summary["max_box_acc_v2"] = float(maxacc.mean())
    summary["num_images"] = int(ious.shape[0])
    if energies is not None:
        summary["energy"] = float(torch.as_tensor(energies, dtype=torch.float64).mean())
    return summary


__all__ = [
    "DEFAULT_IOU_THRESHOLDS",
    "DEFAULT_TAUS",
    "box_accuracy",
    "box_energy",
    "box_iou",
    "choose_tau",
    "largest_component_box",
    "largest_component_boxes",
    "localization_ious",
    "localization_summary",
    "max_box_acc",
]
