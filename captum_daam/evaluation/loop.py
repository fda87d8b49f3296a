"""The evaluation's run loop: every method on the same images, cached per image,
sharded over processes.

:func:`evaluate` walks the images in batches; for every method it reads back the
records already in the cache (:class:`~.cache.RecordCache`) and measures the rest
(:func:`~.measure.measure`). Under ``torch.distributed`` (``torchrun``) every rank
explains its own share of the images (``index % world_size``) and the records are
gathered on every rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Sized, Union

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..distributed import barrier, rank_and_world
from ..errors import InvalidInputError, InvalidInputTypeError
from .cache import Record, RecordCache
from .datasets import collate_boxes
from .faithfulness import logits_function
from .measure import Batch, Explain, MeasureSettings, measure
from .methods import make_explainer
from .statistics import resolve_taus

#: Keyword arguments of ``captum_metrics`` that ``evaluate`` passes on.
CAPTUM_OPTIONS = frozenset({"n_perturb_samples", "noise_std", "perturb_radius", "normalize"})


def _explainers(
    model: nn.Module,
    methods: Union[Sequence[str], Mapping[str, Explain]],
    options: Mapping[str, Mapping[str, Any]],
) -> Dict[str, Explain]:
    """Name -> explain function, from registry names or as given."""
    if isinstance(methods, Mapping):
        explainers = dict(methods)
    else:
        unknown = sorted(set(options) - set(methods))
        if unknown:
            raise InvalidInputError(f"method_options for methods not evaluated: {unknown}")
        explainers = {
            name: make_explainer(name, model, **options.get(name, {})) for name in methods
        }
    if not explainers:
        raise InvalidInputError("no methods to evaluate")
    return explainers


def _cache_settings(
    model: nn.Module,
    settings: MeasureSettings,
    faithfulness: bool,
    options: Mapping[str, Mapping[str, Any]],
) -> Dict[str, Any]:
    """What the records depend on, as stored in ``settings.json``."""
    stored: Dict[str, Any] = {
        "model": type(model).__name__,
        "parameters": sum(int(p.numel()) for p in model.parameters()),
        "target": settings.target,
        "taus": [round(float(t), 6) for t in settings.taus],
        "faithfulness": faithfulness,
        "deletion_steps": settings.deletion_steps,
        "baseline": settings.baseline,
        "options": {
            k: {o: repr(v) for o, v in sorted(opts.items())} for k, opts in sorted(options.items())
        },
    }
    if settings.captum_options:
        stored["captum_metrics"] = {k: repr(v) for k, v in sorted(settings.captum_options.items())}
    return stored


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    methods: Union[Sequence[str], Mapping[str, Explain]],
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
            mapping name -> ``explain(images, targets) -> maps``, (N, 1, h, w) or
            (N, h, w), on the patch grid or in pixels.
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
        raise InvalidInputError(f"target must be 'label' or 'predicted', got {target!r}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    options = {name: dict(opts) for name, opts in (method_options or {}).items()}
    explainers = _explainers(model, methods, options)
    metric_options = dict(captum_options or {})
    unknown = sorted(set(metric_options) - CAPTUM_OPTIONS)
    if unknown:
        raise InvalidInputError(
            f"captum_options {unknown} are not options of captum_metrics; "
            f"choose from {sorted(CAPTUM_OPTIONS)}"
        )
    settings = MeasureSettings(target, resolve_taus(taus), deletion_steps, baseline, metric_options)
    cache = RecordCache(cache_dir)
    stored = _cache_settings(model, settings, faithfulness, options)
    rank, world = rank_and_world()
    if rank == 0:  # rank 0 makes the cache; the others then check it
        cache.check_settings(stored)
    barrier()
    if rank != 0:
        cache.check_settings(stored)
    cache.prepare(explainers)

    if indices is None:
        if not isinstance(dataset, Sized):
            raise InvalidInputTypeError(
                f"{type(dataset).__name__} has no length; pass indices=... to evaluate"
            )
        indices = range(len(dataset))
    all_indices = list(indices)
    mine = all_indices[rank::world]
    faithful: Set[int] = set()
    if faithfulness:
        faithful = set(all_indices if faithfulness_indices is None else faithfulness_indices)
    with_metrics = set(captum_indices or ())
    forward = logits_function(model)
    records: List[Record] = []
    warmed: Set[str] = set()  # methods whose first (slow) call is not timed
    bar = tqdm(
        total=len(mine) * len(explainers),
        disable=not progress or rank != 0,
        desc="evaluate",
        unit="map",
    )
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        images, labels, boxes, ids = collate_boxes([dataset[i] for i in chunk])
        curves = [i in faithful for i in chunk]
        metrics = [i in with_metrics for i in chunk]
        cached = {
            name: [
                cache.read(name, image_id, curves[k], metrics[k]) for k, image_id in enumerate(ids)
            ]
            for name in explainers
        }
        todo = {name: [k for k, r in enumerate(cached[name]) if r is None] for name in explainers}
        predicted = torch.zeros(0, dtype=torch.long)
        if any(todo.values()):
            with torch.no_grad():
                predicted = forward(images).argmax(dim=-1).cpu()
        batch = Batch(images, labels, boxes, ids, predicted, curves, metrics)
        for name, explain in explainers.items():
            records.extend(r for r in cached[name] if r is not None)
            if todo[name]:
                if name not in warmed:
                    explain(images[:1], predicted[:1].to(images.device))
                    warmed.add(name)
                records.extend(measure(model, explain, name, batch, todo[name], settings, cache))
            bar.update(len(ids))
    bar.close()
    if world > 1:
        gathered: List[Optional[List[Record]]] = [None] * world
        torch.distributed.all_gather_object(gathered, records)
        records = [r for part in gathered for r in (part or [])]
    order = list(explainers)
    return sorted(records, key=lambda r: (order.index(r["method"]), r["id"]))


__all__ = ["CAPTUM_OPTIONS", "evaluate"]
