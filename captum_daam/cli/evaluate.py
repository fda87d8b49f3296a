"""``captum-daam evaluate``: every method on the same images, tau tuned on one split and
numbers reported on the other, sanity checks on a few images; sharded under torchrun."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .common import UserError, choose_device
from .models import load_model


def evaluation_dataset(
    kind: str, root: Optional[str], images: Optional[str], num_images: int, transform: Callable
):
    """The dataset of ``captum-daam evaluate --dataset KIND``, or :class:`UserError`."""
    from ..evaluation import BoxDataset, SyntheticBoxes

    if kind == "synthetic":
        from ..zoo import DEFAULT_MODEL_INFO

        return SyntheticBoxes(num_images, seed=DEFAULT_MODEL_INFO.test_seed)
    if root is None:
        raise UserError(f"--dataset {kind} needs --root")
    if not Path(root).exists():
        raise UserError(f"--root {root} does not exist")
    try:
        if kind == "subset":
            return BoxDataset.from_subset(root, transform)
        if images is None:
            raise UserError(f"--dataset {kind} needs --images FOLDER (the image files)")
        if kind == "official":
            return BoxDataset.from_official(root, images, transform)
        return BoxDataset.from_xml(root, images, transform)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the {kind} dataset: {error}") from None


def method_options(texts: Optional[List[str]]) -> Dict[str, Dict[str, object]]:
    """``--option METHOD.NAME=VALUE`` (repeatable) as options per method; values are
    Python literals where they parse as one, else strings."""
    options: Dict[str, Dict[str, object]] = {}
    for text in texts or []:
        key, _, value = text.partition("=")
        method, _, name = key.partition(".")
        if not value or not name:
            raise UserError(
                f"--option {text!r}: write METHOD.NAME=VALUE, e.g. integrated_gradients.n_steps=16"
            )
        try:
            parsed: object = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        options.setdefault(method, {})[name] = parsed
    return options


def _check_counts(args: argparse.Namespace) -> List[str]:
    """The methods asked for, once the method names and image counts are checked."""
    from ..evaluation.methods import METHODS, available_methods

    methods = list(args.methods or available_methods(warn=False))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    for flag in ("faithfulness_images", "captum_metrics", "sanity"):
        if (getattr(args, flag) or 0) < 0:
            raise UserError(
                f"--{flag.replace('_', '-')} counts images; give 0 or more, "
                f"not {getattr(args, flag)}"
            )
    return methods


def evaluate_command(args: argparse.Namespace) -> Dict[str, object]:
    """``captum-daam evaluate``: every method on the same images, tau tuned on one split
    and numbers reported on the other, sanity checks on a few images; tables and plots
    in ``--out``. Runs sharded under ``torchrun`` (gloo on CPU, nccl on GPUs).

    Returns ``{"rank"}`` plus, on rank 0, ``"table"`` (the summary per method) and,
    with ``--sanity``, ``"sanity"`` (the randomisation rows), as in ``evaluation.json``.
    """
    from ..distributed import barrier, join_from_environment, rank_and_world
    from ..evaluation.protocol import (
        OnDevice,
        interleave,
        item_id,
        sanity_checks,
        split_tuning_and_report,
    )
    from ..evaluation.runner import evaluate, summarize, write_report

    device = join_from_environment(choose_device(args.device))
    rank = rank_and_world()[0]
    methods = _check_counts(args)
    loaded = load_model(args.model, args.weights)
    model = loaded.model.to(device)
    if args.max_pixels < 0:
        raise UserError(f"--max-pixels must be 0 (no cap) or more, not {args.max_pixels}")
    dataset = evaluation_dataset(
        args.dataset, args.root, args.images, args.num_images, loaded.transform
    )
    if hasattr(dataset, "max_pixels"):  # a dataset of image files
        dataset.max_pixels = args.max_pixels
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    ids = [item_id(dataset, i) for i in range(count)]
    tuning, evaluation = split_tuning_and_report(ids, args.split)
    data = OnDevice(dataset, device)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    options = method_options(args.option)
    try:
        records = evaluate(
            model,
            data,
            methods,
            cache,
            target=args.target,
            method_options=options,
            batch_size=args.batch_size,
            faithfulness=not args.no_faithfulness,
            deletion_steps=args.steps,
            indices=interleave(tuning, evaluation),
            faithfulness_indices=evaluation[: args.faithfulness_images],
            captum_indices=evaluation[: args.captum_metrics],
        )
    except (ImportError, ValueError) as error:
        raise UserError(str(error)) from None
    result: Dict[str, object] = {"rank": rank}
    if rank == 0:
        table = summarize(records, [ids[i] for i in tuning], [ids[i] for i in evaluation])
        header = (
            f"{loaded.name} on {args.dataset} ({len(evaluation)} evaluation images, "
            f"tau tuned on {len(tuning)} others, split={args.split}, "
            f"target={args.target})"
        )
        write_report(records, table, out, [ids[i] for i in evaluation], header=header)
        result["table"] = table
    if args.sanity > 0 and rank == 0:
        chosen = evaluation[: args.sanity]
        images = torch.stack([data[i][0] for i in chosen])
        labels = torch.tensor([data[i][1] for i in chosen], device=device)
        sanity_methods = args.sanity_methods or [m for m in methods if m != "scorecam"]
        rows = sanity_checks(model, sanity_methods, images, labels, out, options)
        if sanity_methods:
            result["sanity"] = rows
    if rank == 0:
        (out / "evaluation.json").write_text(json.dumps(result, indent=1, default=float))
    barrier()
    return result


__all__ = ["evaluate_command", "evaluation_dataset", "method_options"]
