"""Numbers from the evaluation's records: the summary per method, the paired
differences to a reference method, BoxAcc against tau and the mean deletion and
insertion curves.

Tau is chosen on a tuning split and the numbers are reported on a separate evaluation
split (never the same images).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .cache import Record
from .localization import (
    DEFAULT_IOU_THRESHOLDS,
    DEFAULT_TAUS,
    box_accuracy,
    localization_summary,
)

#: Record keys only some images have (faithfulness and Captum's metrics).
OPTIONAL_KEYS = ("deletion_auc", "insertion_auc", "infidelity", "sensitivity_max")

#: Per-image quantities of :func:`paired_comparison`, in table order.
PAIRED_KEYS = ("mean_iou", "box_acc", "energy") + OPTIONAL_KEYS

#: Where :func:`paired_comparison` counts the images of a key measured on fewer images.
PAIRED_COUNTS = {
    "deletion_auc": "n_faithfulness",
    "insertion_auc": "n_faithfulness",
    "infidelity": "n_captum",
    "sensitivity_max": "n_captum",
}


def resolve_taus(taus: Optional[Tensor] = None) -> Tensor:
    """``taus`` as float64, or the default CAM thresholds (0, 0.01, ..., 0.99)."""
    return DEFAULT_TAUS if taus is None else torch.as_tensor(taus, dtype=torch.float64)


def summarize(
    records: Sequence[Record],
    tuning_ids: Sequence[str],
    evaluation_ids: Sequence[str],
    taus: Optional[Tensor] = None,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
) -> Dict[str, Dict[str, float]]:
    """One row of numbers per method: tau tuned on ``tuning_ids``, everything reported
    on ``evaluation_ids``.

    Args:
        records: What :func:`~.loop.evaluate` returned (or read back from its cache).
        tuning_ids: Image ids where tau is chosen (best box accuracy at IoU 0.5).
        evaluation_ids: Image ids the numbers are reported on; must not overlap
            ``tuning_ids``.
        taus: The thresholds the records were made with (default taus).
        iou_thresholds: δ of MaxBoxAcc.

    Returns:
        ``{method: {"tau", "mean_iou", "box_acc", "max_box_acc@δ", "max_box_acc_v2",
        "energy", "ms_per_image", "top1", "num_images", "num_tuning_images"}}``, and
        the means of ``"deletion_auc", "insertion_auc", "infidelity",
        "sensitivity_max"`` over the evaluation images that have them.

    Example::

        >>> table = summarize(records, tuning_ids=ids[0::2], evaluation_ids=ids[1::2])
        >>> table["daam"]["max_box_acc_v2"]
    """
    tuning, evaluation = set(tuning_ids), set(evaluation_ids)
    if tuning & evaluation:
        raise InvalidInputError(
            f"{len(tuning & evaluation)} images are in both the tuning and the evaluation "
            "split; tau must be chosen on other images than those it is reported on"
        )
    taus = resolve_taus(taus)
    by_method: Dict[str, List[Record]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    table: Dict[str, Dict[str, float]] = {}
    for method, rows in by_method.items():
        tune = [r for r in rows if r["id"] in tuning]
        report = [r for r in rows if r["id"] in evaluation]
        if not tune or not report:
            raise InvalidInputError(
                f"{method}: {len(tune)} tuning and {len(report)} evaluation images have "
                "records; evaluate both splits first"
            )
        ious = torch.tensor([r["ious"] for r in report], dtype=torch.float64)
        tune_ious = torch.tensor([r["ious"] for r in tune], dtype=torch.float64)
        energies = torch.tensor([r["energy"] for r in report], dtype=torch.float64)
        summary = localization_summary(ious, tune_ious, taus, 0.5, iou_thresholds, energies)
        summary["num_tuning_images"] = len(tune)
        summary["ms_per_image"] = 1000.0 * sum(r["seconds"] for r in report) / len(report)
        summary["top1"] = sum(r["correct"] for r in report) / len(report)
        for key in OPTIONAL_KEYS:
            values = [r[key] for r in report if key in r]
            if values:
                summary[key] = sum(values) / len(values)
        table[method] = summary
    return table


def paired_comparison(
    records: Sequence[Record],
    table: Mapping[str, Mapping[str, float]],
    evaluation_ids: Sequence[str],
    reference: str = "daam",
    taus: Optional[Tensor] = None,
    z: float = 1.96,
) -> Dict[str, Dict[str, float]]:
    """How far each method is from ``reference``, image by image, with an interval.

    On the evaluation images that both methods have, each at its own tuned tau (from
    ``table``, as :func:`summarize` made it), the per-image differences ``method -
    reference`` of IoU, hit (IoU >= 0.5), energy and, where both have them, deletion and
    insertion AUC; their mean and a normal-approximation interval ``mean ± z * sd /
    sqrt(n)`` (95% by default). Paired differences are far tighter than comparing the
    two methods' own intervals, since most of the variance is the images'.

    Args:
        records: The per-image records.
        table: :func:`summarize`'s table of the same records (its tuned taus).
        evaluation_ids: The images compared.
        reference: The method the others are compared to.
        taus: The thresholds the records were made with (default taus).
        z: Half-width of the interval in standard errors.

    Returns:
        ``{method: {"n", key, key + "_low", key + "_high", ...}}`` for every method but
        ``reference``, keys ``mean_iou, box_acc, energy`` (and ``deletion_auc,
        insertion_auc``, with ``"n_faithfulness"``, when both have curves;
        ``infidelity, sensitivity_max``, with ``"n_captum"``, when both have them).

    Example::

        >>> comparison = paired_comparison(records, table, ids[1::2], reference="daam")
        >>> comparison["gradcam"]["mean_iou_low"]
    """
    if reference not in table:
        raise InvalidInputError(
            f"reference method {reference!r} is not in the table ({sorted(table)})"
        )
    taus = resolve_taus(taus)
    wanted = set(evaluation_ids)

    def per_image(method: str) -> Dict[str, Dict[str, float]]:
        column = int((taus - table[method]["tau"]).abs().argmin())
        out = {}
        for record in records:
            if record["method"] == method and record["id"] in wanted:
                iou = float(record["ious"][column])
                values = {
                    "mean_iou": iou,
                    "box_acc": float(iou >= 0.5),
                    "energy": float(record["energy"]),
                }
                for key in OPTIONAL_KEYS:
                    if key in record:
                        values[key] = float(record[key])
                out[record["id"]] = values
        return out

    base = per_image(reference)
    result: Dict[str, Dict[str, float]] = {}
    for method in table:
        if method == reference:
            continue
        rows = per_image(method)
        common = sorted(set(rows) & set(base))
        entry: Dict[str, float] = {"n": len(common)}
        for key in PAIRED_KEYS:
            pairs = [
                rows[i][key] - base[i][key] for i in common if key in rows[i] and key in base[i]
            ]
            if len(pairs) < 2:
                continue
            diff = torch.tensor(pairs, dtype=torch.float64)
            half = z * float(diff.std()) / len(pairs) ** 0.5
            mean = float(diff.mean())
            entry.update({key: mean, f"{key}_low": mean - half, f"{key}_high": mean + half})
            if key in PAIRED_COUNTS:
                entry[PAIRED_COUNTS[key]] = len(pairs)
        result[method] = entry
    return result


def box_accuracy_curves(
    records: Sequence[Record], evaluation_ids: Sequence[str], iou_threshold: float = 0.5
) -> Dict[str, Tensor]:
    """BoxAcc(tau) at ``iou_threshold`` per method on ``evaluation_ids``, (T,) each:
    MaxBoxAcc is each curve's maximum.

    Example::

        >>> curves = box_accuracy_curves(records, ids[1::2])
        >>> float(curves["daam"].max())  # MaxBoxAcc at IoU 0.5
    """
    wanted = set(evaluation_ids)
    curves: Dict[str, List[List[float]]] = {}
    for record in records:
        if record["id"] in wanted:
            curves.setdefault(record["method"], []).append(record["ious"])
    return {
        m: box_accuracy(torch.tensor(v, dtype=torch.float64), iou_threshold)
        for m, v in curves.items()
    }


def mean_deletion_insertion(
    records: Sequence[Record], evaluation_ids: Sequence[str]
) -> Dict[str, Dict[str, Tensor]]:
    """The mean deletion and insertion curves per method over the images of
    ``evaluation_ids`` that have them: ``{method: {"deletion": (S,), "insertion":
    (S,)}}``; methods without curves are left out."""
    wanted = set(evaluation_ids)
    curves: Dict[str, Dict[str, List[List[float]]]] = {}
    for record in records:
        if record["id"] in wanted and "deletion" in record:
            entry = curves.setdefault(record["method"], {"deletion": [], "insertion": []})
            entry["deletion"].append(record["deletion"])
            entry["insertion"].append(record["insertion"])
    return {
        method: {kind: torch.tensor(values).mean(dim=0) for kind, values in entry.items()}
        for method, entry in curves.items()
    }


__all__ = [
    "OPTIONAL_KEYS",
    "PAIRED_COUNTS",
    "PAIRED_KEYS",
    "box_accuracy_curves",
    "mean_deletion_insertion",
    "paired_comparison",
    "resolve_taus",
    "summarize",
]
