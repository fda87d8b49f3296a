"""The evaluation harness: every method on the same images in one run, cached per image,
sharded over processes, summarised into tables.

:func:`evaluate` explains each image with each method (the ground-truth class by
default, as the weakly-supervised localisation protocol does), and stores per image and
method one JSON record: the IoU of the largest component's box at every threshold tau,
the energy inside the boxes (pointing game), the deletion and insertion curves and
AUCs, Captum's infidelity and sensitivity-max on the images asked for, and the time
the explanation took. Records already in the cache are not
recomputed, so an interrupted run resumes where it stopped. Under ``torch.distributed``
(``torchrun``) every rank explains its own share of the images (``index % world_size``)
and the records are gathered on every rank.

:func:`summarize` turns records into one row per method: tau is chosen on a tuning split
and the numbers are reported on a separate evaluation split (never the same images);
:func:`write_report` writes JSON, a Markdown table and plots.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..display import upsample
from .datasets import collate_boxes
from .faithfulness import captum_metrics, deletion_insertion
from .localization import (
    DEFAULT_IOU_THRESHOLDS,
    DEFAULT_TAUS,
    box_accuracy,
    box_energy,
    localization_ious,
    localization_summary,
)
from .methods import make_explainer
from .plotting import line_style

Record = Dict[str, Any]

#: Columns of the Markdown table: (record key, header, format).
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

#: Where :func:`paired_comparison` counts the images of a key measured on fewer images.
_PAIRED_COUNTS = {"deletion_auc": "n_faithfulness", "insertion_auc": "n_faithfulness",
                  "infidelity": "n_captum", "sensitivity_max": "n_captum"}

#: Record keys only some images have (faithfulness and Captum's metrics).
_OPTIONAL = ("deletion_auc", "insertion_auc", "infidelity", "sensitivity_max")

#: Keyword arguments of ``captum_metrics`` that ``evaluate`` passes on.
_CAPTUM_OPTIONS = {"n_perturb_samples", "noise_std", "perturb_radius", "normalize"}


def _distributed() -> tuple:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _cache_name(image_id: str) -> str:
    """A file name for ``image_id`` (ids may hold path separators)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in image_id)
    digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
    return f"{safe[-80:]}-{digest}.json"


def _check_settings(cache_dir: Path, settings: Dict[str, Any]) -> None:
    """Refuse a cache made with other settings (its records would be mixed in)."""
    path = cache_dir / "settings.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != settings:
            changed = sorted(k for k in set(stored) | set(settings)
                             if stored.get(k) != settings.get(k))
            raise ValueError(
                f"the cache {cache_dir} was made with other settings ({', '.join(changed)} "
                "differ); use another cache folder or delete this one"
            )
    else:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(settings, indent=1, sort_keys=True))
        tmp.replace(path)


def _write_record(path: Path, record: Record) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)  # atomic: an interrupted run never leaves half a record


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    methods: Union[Sequence[str], Mapping[str, Callable[[Tensor, Tensor], Tensor]]],
    cache_dir: Union[str, Path],
    target: str = "label",
    batch_size: int = 16,
    taus: Optional[Tensor] = None,
    faithfulness: bool = True,
    deletion_steps: Optional[int] = 14,
    baseline: str = "blur",
    method_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    indices: Optional[Sequence[int]] = None,
    faithfulness_indices: Optional[Sequence[int]] = None,
    captum_indices: Optional[Sequence[int]] = None,
    captum_options: Optional[Mapping[str, Any]] = None,
    progress: bool = True,
) -> List[Record]:
    """Explain every image of ``dataset`` with every method and measure the maps.

    Args:
        model: The classifier, in eval mode (left as found).
        dataset: Items ``(image, label, boxes, image_id)`` as the datasets of
            :mod:`captum_daam.evaluation.datasets` yield them (boxes in model-input
            pixels).
        methods: Names for :func:`~captum_daam.evaluation.methods.make_explainer`, or a
            mapping name -> ``explain(images, targets) -> maps`` (patch grid or pixels).
        cache_dir: Folder of the per-image records (``<method>/<image>.json``) and of
            ``settings.json``; reused to resume, refused if made with other settings.
        target: ``"label"`` (the ground-truth class, the WSOL protocol) or
            ``"predicted"`` (the model's top-1 class).
        batch_size: Images per explanation call.
        taus: CAM thresholds (default 0, 0.01, ..., 0.99).
        faithfulness: Whether to run deletion and insertion (the slowest part).
        deletion_steps: Points of the deletion / insertion curves after the clean one
            (``None``: one patch per step).
        baseline: What removed patches show in deletion / insertion (``"blur"``,
            ``"zeros"``).
        method_options: Options per method name, passed to ``make_explainer``.
        indices: Dataset indices to evaluate (default all); sharded over ranks.
        faithfulness_indices: With ``faithfulness``, the indices that get deletion and
            insertion (default: all evaluated ones); e.g. the evaluation split only,
            as tuning tau needs none.
        captum_indices: The indices that get Captum's ``infidelity`` and
            ``sensitivity_max`` (:func:`~captum_daam.evaluation.faithfulness.captum_metrics`,
            seeded; default none: sensitivity explains every image ten more times).
        captum_options: Keyword arguments of ``captum_metrics`` (``n_perturb_samples``,
            ``noise_std``, ``perturb_radius``, ``normalize``); part of the cache settings.
        progress: Show a progress bar (rank 0 only).

    Returns:
        All records (of every rank, gathered), sorted by method then image id. A record
        holds ``method, id, label, target, predicted, correct, ious`` (one per tau),
        ``energy, seconds`` (explanation time per image, after one untimed warm-up
        call per method) and, with ``faithfulness``, ``deletion_auc,
        insertion_auc, deletion, insertion`` (the curves) and, for ``captum_indices``,
        ``infidelity, sensitivity_max``.

    Example::

        >>> data = BoxDataset.from_subset(root, transform)
        >>> records = evaluate(model, data, ["daam", "gradcam"], "cache/")
        >>> table = summarize(records, tuning_ids=ids[0::2], evaluation_ids=ids[1::2])
    """
    from tqdm import tqdm

    if target not in ("label", "predicted"):
        raise ValueError(f"target must be 'label' or 'predicted', got {target!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    taus = DEFAULT_TAUS if taus is None else torch.as_tensor(taus, dtype=torch.float64)
    options = {name: dict(opts) for name, opts in (method_options or {}).items()}
    if isinstance(methods, Mapping):
        explainers = dict(methods)
    else:
        unknown = sorted(set(options) - set(methods))
        if unknown:
            raise ValueError(f"method_options for methods not evaluated: {unknown}")
        explainers = {name: make_explainer(name, model, **options.get(name, {}))
                      for name in methods}
    if not explainers:
        raise ValueError("no methods to evaluate")
    cache = Path(cache_dir)
    settings = {
        "model": type(model).__name__,
        "parameters": sum(int(p.numel()) for p in model.parameters()),
        "target": target,
        "taus": [round(float(t), 6) for t in taus],
        "faithfulness": faithfulness,
        "deletion_steps": deletion_steps,
        "baseline": baseline,
        "options": {k: {o: repr(v) for o, v in sorted(opts.items())}
                    for k, opts in sorted(options.items())},
    }
    metric_options = dict(captum_options or {})
    unknown = sorted(set(metric_options) - _CAPTUM_OPTIONS)
    if unknown:
        raise ValueError(f"captum_options {unknown} are not options of captum_metrics; "
                         f"choose from {sorted(_CAPTUM_OPTIONS)}")
    if metric_options:
        settings["captum_metrics"] = {k: repr(v) for k, v in sorted(metric_options.items())}
    rank, world = _distributed()
    if rank == 0:
        _check_settings(cache, settings)
    if world > 1:
        torch.distributed.barrier()
        if rank != 0:
            _check_settings(cache, settings)
    for name in explainers:
        (cache / name).mkdir(parents=True, exist_ok=True)

    all_indices = list(range(len(dataset))) if indices is None else list(indices)
    mine = all_indices[rank::world]
    faithful = set(all_indices if faithfulness_indices is None else faithfulness_indices)
    if not faithfulness:
        faithful = set()
    with_metrics = set(captum_indices or ())
    records: List[Record] = []
    warmed: set = set()  # methods whose first (slow) call is not timed
    bar = tqdm(total=len(mine) * len(explainers), disable=not progress or rank != 0,
               desc="evaluate", unit="map")
    for start in range(0, len(mine), batch_size):
        chunk = mine[start:start + batch_size]
        items = [dataset[i] for i in chunk]
        images, labels, boxes, ids = collate_boxes(items)
        paths = {name: [cache / name / _cache_name(i) for i in ids] for name in explainers}
        curves = [chunk[k] in faithful for k in range(len(ids))]
        metrics = [chunk[k] in with_metrics for k in range(len(ids))]
        cached = {name: [_cached(p, curves[k], metrics[k]) for k, p in enumerate(paths[name])]
                  for name in explainers}
        todo = {name: [k for k, r in enumerate(cached[name]) if r is None]
                for name in explainers}
        predicted: Optional[Tensor] = None
        if any(todo.values()):
            with torch.no_grad():
                predicted = model(images).argmax(dim=-1).cpu()
        for name, explain in explainers.items():
            records.extend(r for r in cached[name] if r is not None)
            if todo[name]:
                assert predicted is not None
                if name not in warmed:
                    explain(images[:1], predicted[:1].to(images.device))
                    warmed.add(name)
                records.extend(_measure(
                    model, explain, name, images, labels, boxes, ids, predicted,
                    todo[name], paths[name], target, taus, curves,
                    deletion_steps, baseline, metrics, metric_options,
                ))
            bar.update(len(ids))
    bar.close()
    if world > 1:
        gathered: List[Optional[List[Record]]] = [None] * world
        torch.distributed.all_gather_object(gathered, records)
        records = [r for part in gathered for r in (part or [])]
    return sorted(records, key=lambda r: (list(explainers).index(r["method"]), r["id"]))


def _cached(path: Path, needs_curves: bool, needs_metrics: bool = False) -> Optional[Record]:
    """The cached record at ``path`` if it exists with everything asked for."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if (needs_curves and "deletion" not in record) or (
            needs_metrics and "infidelity" not in record):
        return None
    return record


def _measure(
    model: nn.Module,
    explain: Callable[[Tensor, Tensor], Tensor],
    name: str,
    images: Tensor,
    labels: Tensor,
    boxes: List[Tensor],
    ids: List[str],
    predicted: Tensor,
    which: List[int],
    paths: List[Path],
    target: str,
    taus: Tensor,
    curves_for: List[bool],
    deletion_steps: Optional[int],
    baseline: str,
    metrics_for: Sequence[bool],
    metric_options: Mapping[str, Any],
) -> List[Record]:
    """Explain and measure the images ``which`` of a batch; write and return records."""
    index = torch.tensor(which)
    batch = images[index]
    targets = (labels if target == "label" else predicted)[index]
    start = time.perf_counter()
    maps = explain(batch, targets).detach().float().cpu()
    seconds = (time.perf_counter() - start) / len(which)
    if maps.dim() == 4:
        maps = maps[:, 0]
    full = upsample(maps[:, None], tuple(batch.shape[-2:]))[:, 0]
    chosen = [boxes[k] for k in which]
    ious = localization_ious(full, chosen, taus)
    energy = box_energy(full, chosen)
    faithful = [row for row, k in enumerate(which) if curves_for[k]]
    curves = None
    if faithful:
        rows = torch.tensor(faithful)
        curves = deletion_insertion(model, batch[rows.to(batch.device)], targets[rows],
                                    maps[rows], steps=deletion_steps, baseline=baseline)
    measured = [row for row, k in enumerate(which) if metrics_for[k]]
    captum: Optional[Dict[str, Tensor]] = None
    if measured:
        rows = torch.tensor(measured)
        captum = captum_metrics(model, explain, batch[rows.to(batch.device)],
                                targets[rows].to(batch.device), maps=maps[rows],
                                max_examples_per_batch=len(measured),
                                **metric_options)
    out = []
    for row, k in enumerate(which):
        record: Record = {
            "method": name,
            "id": ids[k],
            "label": int(labels[k]),
            "target": int(targets[row]),
            "predicted": int(predicted[k]),
            "correct": bool(int(predicted[k]) == int(labels[k])),
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
        _write_record(paths[k], record)
        out.append(record)
    return out


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
        records: What :func:`evaluate` returned (or read back from its cache).
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
    """
    tuning, evaluation = set(tuning_ids), set(evaluation_ids)
    if tuning & evaluation:
        raise ValueError(
            f"{len(tuning & evaluation)} images are in both the tuning and the evaluation "
            "split; tau must be chosen on other images than those it is reported on"
        )
    taus = DEFAULT_TAUS if taus is None else torch.as_tensor(taus, dtype=torch.float64)
    by_method: Dict[str, List[Record]] = {}
    for record in records:
        by_method.setdefault(record["method"], []).append(record)
    table: Dict[str, Dict[str, float]] = {}
    for method, rows in by_method.items():
        tune = [r for r in rows if r["id"] in tuning]
        report = [r for r in rows if r["id"] in evaluation]
        if not tune or not report:
            raise ValueError(
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
        for key in _OPTIONAL:
            values = [r[key] for r in report if key in r]
            if values:
                summary[key] = sum(values) / len(values)
        table[method] = summary
    return table


#: Per-image quantities of :func:`paired_comparison`: (key, header).
_PAIRED = (
    ("mean_iou", "Δ mean IoU"),
    ("box_acc", "Δ acc@0.5"),
    ("energy", "Δ pointing (energy)"),
    ("deletion_auc", "Δ deletion AUC"),
    ("insertion_auc", "Δ insertion AUC"),
    ("infidelity", "Δ infidelity"),
    ("sensitivity_max", "Δ sensitivity"),
)


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

    Returns:
        ``{method: {"n", key, key + "_low", key + "_high", ...}}`` for every method but
        ``reference``, keys ``mean_iou, box_acc, energy`` (and ``deletion_auc,
        insertion_auc``, with ``"n_faithfulness"``, when both have curves;
        ``infidelity, sensitivity_max``, with ``"n_captum"``, when both have them).
    """
    if reference not in table:
        raise ValueError(f"reference method {reference!r} is not in the table ({sorted(table)})")
    taus = DEFAULT_TAUS if taus is None else torch.as_tensor(taus, dtype=torch.float64)
    wanted = set(evaluation_ids)

    def per_image(method: str) -> Dict[str, Dict[str, float]]:
        column = int((taus - table[method]["tau"]).abs().argmin())
        out = {}
        for record in records:
            if record["method"] == method and record["id"] in wanted:
                iou = float(record["ious"][column])
                values = {"mean_iou": iou, "box_acc": float(iou >= 0.5),
                          "energy": float(record["energy"])}
                for key in _OPTIONAL:
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
        for key, _ in _PAIRED:
            pairs = [rows[i][key] - base[i][key] for i in common
                     if key in rows[i] and key in base[i]]
            if len(pairs) < 2:
                continue
            diff = torch.tensor(pairs, dtype=torch.float64)
            half = z * float(diff.std()) / len(pairs) ** 0.5
            mean = float(diff.mean())
            entry.update({key: mean, f"{key}_low": mean - half, f"{key}_high": mean + half})
            if key in _PAIRED_COUNTS:
                entry[_PAIRED_COUNTS[key]] = len(pairs)
        result[method] = entry
    return result


def paired_markdown(comparison: Mapping[str, Mapping[str, float]], reference: str = "daam") -> str:
    """:func:`paired_comparison` as a Markdown table: mean difference and interval.
    Columns measured on fewer images than the ``images`` column (faithfulness, Captum's
    metrics) name their count in the header when every row has the same."""
    columns = []
    for key, header in _PAIRED:
        rows = [row for row in comparison.values() if key in row]
        if not rows:
            continue
        counts = {row.get(_PAIRED_COUNTS.get(key, "n")) for row in rows}
        if len(counts) == 1 and None not in counts and counts != {rows[0]["n"]}:
            header += f" ({int(counts.pop())} images)"
        columns.append((key, header))
    lines = [f"| method - {reference} | images | " + " | ".join(h for _, h in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for method, row in comparison.items():
        cells = [f"{row[k]:+.3f} [{row[k + '_low']:+.3f}, {row[k + '_high']:+.3f}]"
                 if k in row else "" for k, _ in columns]
        lines.append(f"| {method} | {int(row['n'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(table: Mapping[str, Mapping[str, float]]) -> str:
    """The summary as a Markdown table, one row per method."""
    columns = [c for c in _COLUMNS if any(c[0] in row for row in table.values())]
    lines = ["| method | " + " | ".join(c[1] for c in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for method, row in table.items():
        cells = [fmt.format(row[key]) if key in row else "" for key, _, fmt in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def box_accuracy_curves(
    records: Sequence[Record], evaluation_ids: Sequence[str], iou_threshold: float = 0.5
) -> Dict[str, Tensor]:
    """BoxAcc(tau) at ``iou_threshold`` per method on ``evaluation_ids``, (T,) each:
    MaxBoxAcc is each curve's maximum."""
    wanted = set(evaluation_ids)
    curves: Dict[str, List[List[float]]] = {}
    for record in records:
        if record["id"] in wanted:
            curves.setdefault(record["method"], []).append(record["ious"])
    return {m: box_accuracy(torch.tensor(v, dtype=torch.float64), iou_threshold)
            for m, v in curves.items()}


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
    paired differences to it (:func:`paired_comparison`), also in ``comparison.json``.

    Returns the written paths by kind.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taus = DEFAULT_TAUS if taus is None else torch.as_tensor(taus, dtype=torch.float64)
    paths = {"json": out / "summary.json", "markdown": out / "summary.md",
             "box_accuracy": out / "box_accuracy.png"}
    paths["json"].write_text(json.dumps(table, indent=1))
    text = (header + "\n\n" if header else "") + markdown_table(table) + "\n"
    if reference is not None and reference in table and len(table) > 1:
        comparison = paired_comparison(records, table, evaluation_ids, reference, taus)
        paths["comparison"] = out / "comparison.json"
        paths["comparison"].write_text(json.dumps(comparison, indent=1))
        text += (f"\nPaired differences to {reference} on the same images (each method at "
                 "its own tuned tau; mean and 95% normal-approximation interval):\n\n"
                 + paired_markdown(comparison, reference) + "\n")
    paths["markdown"].write_text(text)

    fig, ax = plt.subplots(figsize=(7.6, 4))
    for index, (method, curve) in enumerate(box_accuracy_curves(records, evaluation_ids).items()):
        ax.plot(taus.numpy(), curve.numpy(), label=method, **line_style(index, method, reference))
    ax.set_xlabel("CAM threshold tau")
    ax.set_ylabel("BoxAcc (IoU >= 0.5)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(paths["box_accuracy"], dpi=120)
    plt.close(fig)

    wanted = set(evaluation_ids)
    curves: Dict[str, Dict[str, List[List[float]]]] = {}
    for record in records:
        if record["id"] in wanted and "deletion" in record:
            entry = curves.setdefault(record["method"], {"deletion": [], "insertion": []})
            entry["deletion"].append(record["deletion"])
            entry["insertion"].append(record["insertion"])
    if curves:
        paths["deletion_insertion"] = out / "deletion_insertion.png"
        fig, axes = plt.subplots(1, 2, figsize=(11.6, 4))
        for index, (method, entry) in enumerate(curves.items()):
            for ax, kind in zip(axes, ("deletion", "insertion")):
                mean = torch.tensor(entry[kind]).mean(dim=0)
                ax.plot(torch.linspace(0, 1, len(mean)).numpy(), mean.numpy(), label=method,
                        **line_style(index, method, reference))
        for ax, kind in zip(axes, ("deletion", "insertion")):
            ax.set_title(f"{kind} (mean over images)")
            ax.set_xlabel(f"fraction of patches {'removed' if kind == 'deletion' else 'inserted'}")
            ax.set_ylabel("target probability")
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(paths["deletion_insertion"], dpi=120)
        plt.close(fig)
    return paths


__all__ = [
    "box_accuracy_curves",
    "evaluate",
    "markdown_table",
    "paired_comparison",
    "paired_markdown",
    "summarize",
    "write_report",
]
