"""The evaluation's reports: Markdown tables of the summary and of the paired
differences, and :func:`write_report`, which writes them with JSON and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

from torch import Tensor

from .cache import Record
from .plotting import plot_box_accuracy, plot_deletion_insertion
from .statistics import (
    PAIRED_COUNTS,
    PAIRED_KEYS,
    box_accuracy_curves,
    mean_deletion_insertion,
    paired_comparison,
    resolve_taus,
)

#: Columns of the summary table: (record key, header, format).
_COLUMNS = (
    ("mean_iou", "mean IoU", "{:.3f}"),
    ("box_acc", "acc@0.5", "{:.3f}"),
    ("max_box_acc@0.3", "MaxBoxAcc 0.3", "{:.3f}"),
    ("max_box_acc@0.5", "MaxBoxAcc 0.5", "{:.3f}"),
    ("max_box_acc@0.7", "MaxBoxAcc 0.7", "{:.3f}"),
    ("max_box_acc_v2", "MaxBoxAccV2", "{:.3f}"),
    ("energy", "pointing (energy)", "{:.3f}"),
    ("deletion_auc", "deletion AUC ↓", "{:.3f}"),
    ("insertion_auc", "insertion AUC ↑", "{:.3f}"),
    ("infidelity", "infidelity ↓", "{:.3g}"),
    ("sensitivity_max", "sensitivity ↓", "{:.3f}"),
    ("ms_per_image", "ms / image", "{:.0f}"),
    ("tau", "tau (tuned)", "{:.2f}"),
)

#: Headers of the paired table, by key of ``PAIRED_KEYS``.
_PAIRED_HEADERS = {
    "mean_iou": "Δ mean IoU",
    "box_acc": "Δ acc@0.5",
    "energy": "Δ pointing (energy)",
    "deletion_auc": "Δ deletion AUC",
    "insertion_auc": "Δ insertion AUC",
    "infidelity": "Δ infidelity",
    "sensitivity_max": "Δ sensitivity",
}


def markdown_table(table: Mapping[str, Mapping[str, float]]) -> str:
    """The summary as a Markdown table, one row per method; columns no method has
    are left out.

    Example::

        >>> print(markdown_table(summarize(records, ids[0::2], ids[1::2])))
        | method | mean IoU | acc@0.5 | ...
    """
    columns = [c for c in _COLUMNS if any(c[0] in row for row in table.values())]
    lines = [
        "| method | " + " | ".join(c[1] for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for method, row in table.items():
        cells = [fmt.format(row[key]) if key in row else "" for key, _, fmt in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_markdown(comparison: Mapping[str, Mapping[str, float]], reference: str = "daam") -> str:
    """:func:`~.statistics.paired_comparison` as a Markdown table: mean difference and
    interval. Columns measured on fewer images than the ``images`` column (faithfulness,
    Captum's metrics) name their count in the header when every row has the same.

    Example::

        >>> print(paired_markdown(paired_comparison(records, table, ids[1::2])))
        | method - daam | images | Δ mean IoU | ...
    """
    columns = []
    for key in PAIRED_KEYS:
        header = _PAIRED_HEADERS[key]
        rows = [row for row in comparison.values() if key in row]
        if not rows:
            continue
        counts = {row.get(PAIRED_COUNTS.get(key, "n")) for row in rows}
        only = next(iter(counts)) if len(counts) == 1 else None
        if only is not None and counts != {rows[0]["n"]}:
            header += f" ({int(only)} images)"
        columns.append((key, header))
    lines = [
        f"| method - {reference} | images | " + " | ".join(h for _, h in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for method, row in comparison.items():
        cells = [
            f"{row[k]:+.3f} [{row[k + '_low']:+.3f}, {row[k + '_high']:+.3f}]" if k in row else ""
            for k, _ in columns
        ]
        lines.append(f"| {method} | {int(row['n'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    records: Sequence[Record],
    table: Mapping[str, Mapping[str, float]],
    out_dir: Union[str, Path],
    evaluation_ids: Sequence[str],
    taus: Optional[Tensor] = None,
    header: str = "",
    reference: Optional[str] = "daam",
) -> Dict[str, Path]:
    """Write ``summary.json``, ``summary.md`` and the plots ``box_accuracy.png``
    (BoxAcc at IoU 0.5 against tau) and ``deletion_insertion.png`` (mean curves). With
    ``reference`` in the table beside other methods, ``summary.md`` also holds the
    paired differences to it (:func:`~.statistics.paired_comparison`), also in
    ``comparison.json``.

    Args:
        records: The per-image records.
        table: :func:`~.statistics.summarize`'s table of the same records.
        out_dir: The folder written to (made when missing).
        evaluation_ids: The images the plots and the paired differences cover.
        taus: The thresholds the records were made with (default taus).
        header: Text put above the tables in ``summary.md``.
        reference: The method the others are compared to and drawn thicker.

    Returns:
        The written paths by kind (``"json"``, ``"markdown"``, ``"box_accuracy"`` and,
        when written, ``"comparison"``, ``"deletion_insertion"``).

    Example::

        >>> paths = write_report(records, table, "out/", ids[1::2])
        >>> print(paths["markdown"].read_text())
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taus = resolve_taus(taus)
    paths = {
        "json": out / "summary.json",
        "markdown": out / "summary.md",
        "box_accuracy": out / "box_accuracy.png",
    }
    paths["json"].write_text(json.dumps(table, indent=1))
    text = (header + "\n\n" if header else "") + markdown_table(table) + "\n"
    if reference is not None and reference in table and len(table) > 1:
        comparison = paired_comparison(records, table, evaluation_ids, reference, taus)
        paths["comparison"] = out / "comparison.json"
        paths["comparison"].write_text(json.dumps(comparison, indent=1))
        text += (
            f"\nPaired differences to {reference} on the same images (each method at "
            "its own tuned tau; mean and 95% normal-approximation interval):\n\n"
            + paired_markdown(comparison, reference)
            + "\n"
        )
    paths["markdown"].write_text(text)

    plot_box_accuracy(
        box_accuracy_curves(records, evaluation_ids), taus, paths["box_accuracy"], reference
    )
    curves = mean_deletion_insertion(records, evaluation_ids)
    if curves:
        paths["deletion_insertion"] = out / "deletion_insertion.png"
        plot_deletion_insertion(curves, paths["deletion_insertion"], reference)
    return paths


__all__ = ["markdown_table", "paired_markdown", "write_report"]
