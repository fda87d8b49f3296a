"""``captum-daam explain`` and ``captum-daam demo``: DAAM flows of image files, written as
figures, raw maps, an optional GIF and viewer page, and ``summary.json``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import DAAMError
from .common import UserError, choose_device, prepare_out
from .images import DEFAULT_MAX_PIXELS, collect_images, load_images
from .models import LoadedModel, load_model

if TYPE_CHECKING:
    from ..memory_bank import MemoryBank


def load_bank(path: Path, device: torch.device):
    """The :class:`~captum_daam.MemoryBank` in ``path`` on ``device``, or one
    :class:`UserError` saying why the file cannot be used."""
    from .. import MemoryBank

    try:
        return MemoryBank.load(path, device=device)
    except DAAMError as error:
        raise UserError(f"cannot use memory bank: {error}") from None


def _explainer(
    loaded: LoadedModel,
    device: torch.device,
    target: Optional[int],
    topk: int,
    bank,
    k: int,
    queries: Optional[str],
):
    """The explainer and the class names to show (None: the bank's labels), or
    :class:`UserError`."""
    from .. import DAAM
    from ..errors import UnsupportedModelError

    if bank is not None:
        from .. import MemoryBank, SelfSupervisedDAAM

        if topk != 1:
            raise UserError("--topk does not apply with --ssl: the bank's vote is explained")
        if not isinstance(bank, MemoryBank):
            bank = load_bank(bank, device)
        try:
            return SelfSupervisedDAAM(loaded.model, bank, k=k, queries=queries), None
        except UnsupportedModelError as error:
            raise UserError(f"{loaded.name}: {error}") from None
        except ValueError as error:  # e.g. k larger than the bank, features of another size
            raise UserError(f"cannot use the memory bank: {error}") from None
    try:
        daam = DAAM(loaded.model, queries=queries)
    except UnsupportedModelError as error:
        raise UserError(f"{loaded.name}: {error}") from None
    num_classes = int(daam.adapter.num_classes or 0)
    if target is not None and not 0 <= target < num_classes:
        raise UserError(f"--target {target} out of range: the model has {num_classes} classes")
    if not 1 <= topk <= max(num_classes, 1):
        raise UserError(f"--topk must lie in [1, {num_classes}]")
    return daam, loaded.class_names


def _explain_batch(
    daam, images: torch.Tensor, target: Optional[int], topk: int, ssl: bool, name_of
) -> Tuple[list, List[List[dict]]]:
    """The flows of one batch (flow ``j`` explains every image's ``j``-th class) and the
    predictions per image (the bank's vote, or the top-5 classes)."""
    from ..viewer import explain_top_k

    if ssl:
        try:
            flow = daam.attribute(images, target=target, return_flow=True)
        except ValueError as error:  # e.g. a target class absent from the bank
            raise UserError(str(error)) from None
        return [flow], [
            [{"class": int(c), "name": name_of(int(c)), "vote_share": round(float(p), 5)}]
            for c, p in zip(flow.voted_class, flow.vote_share, strict=True)
        ]
    from ..attr import model_lock

    with torch.no_grad(), model_lock(daam.adapter.model):
        logits = daam.adapter.logits(daam.forward_func(images))
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    probabilities = logits.softmax(dim=1).gather(1, ranked)
    predictions = [
        [
            {"class": int(c), "name": name_of(int(c)), "probability": round(float(p), 5)}
            for p, c in zip(probabilities[i].tolist(), ranked[i].tolist(), strict=True)
        ]
        for i in range(len(images))
    ]
    if target is None:
        return explain_top_k(daam, images, k=topk, logits=logits), predictions
    targets = torch.full((len(images),), target, device=images.device)
    return [daam.attribute(images, target=targets, return_flow=True)], predictions


def _upsampled(flow, index: int, size: Tuple[int, int]) -> torch.Tensor:
    from ..display import upsample

    return upsample(flow.final[index : index + 1].cpu().float(), size)


def _write_image(
    file: Path,
    image: torch.Tensor,
    i: int,
    flows: list,
    contributions: list,
    loaded: LoadedModel,
    names,
    name_of,
    out: Path,
    gif: bool,
    box: Optional[List[float]],
) -> List[dict]:
    """Write image ``i``'s maps and figures; its explained classes, with the energy in
    its box where it has one."""
    from ..evaluation import box_energy, boxes_mask
    from ..visualization import flow_figure, flow_gif

    stem = out / file.stem
    np.savez_compressed(
        f"{stem}_maps.npz",
        block_maps=torch.stack([f.block_maps[i] for f in flows]).cpu().numpy(),
        accumulated=torch.stack([f.accumulated[i] for f in flows]).cpu().numpy(),
        targets=torch.stack([f.targets[i] for f in flows]).cpu().numpy(),
        scores=torch.stack([f.scores[i] for f in flows]).cpu().numpy(),
        layer_names=np.array(flows[0].layer_names),
    )
    size = (int(image.shape[-2]), int(image.shape[-1]))
    if box is not None:
        boxes = torch.tensor([box])
        energies = box_energy(
            torch.cat([_upsampled(f, i, size) for f in flows]), [boxes] * len(flows)
        )
        area = round(float(boxes_mask(boxes, size).double().mean()), 4)
    explained = []
    for j, flow in enumerate(flows):
        suffix = "" if len(flows) == 1 else f"_top{j + 1}"
        flow_figure(
            image,
            flow,
            index=i,
            class_names=names,
            mean=loaded.mean,
            std=loaded.std,
            path=f"{stem}_flow{suffix}.png",
        )
        if gif:
            flow_gif(
                image,
                flow,
                f"{stem}_flow{suffix}.gif",
                index=i,
                mean=loaded.mean,
                std=loaded.std,
                scale=max(1, 256 // image.shape[-1]),
            )
        cls = int(flow.targets[i])
        entry = {
            "class": cls,
            "name": name_of(cls),
            "score": float(flow.scores[i]),
            "block_contributions": [round(float(c), 5) for c in contributions[j][i]],
        }
        if box is not None:
            entry["energy_in_box"] = round(float(energies[j]), 4)
            entry["box_area_fraction"] = area
        explained.append(entry)
    return explained


def explain(
    loaded: LoadedModel,
    files: Sequence[Path],
    out: Path,
    device: torch.device,
    batch_size: int = 8,
    target: Optional[int] = None,
    topk: int = 1,
    gif: bool = False,
    html: bool = False,
    boxes: Optional[Dict[str, List[float]]] = None,
    progress: bool = True,
    bank: Optional[Union[Path, "MemoryBank"]] = None,
    k: int = 20,
    queries: Optional[str] = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    """Explain ``files`` and write, per image, the flow figure, the raw maps (.npz) and
    optionally a GIF, plus ``summary.json`` and optionally the interactive viewer
    ``viewer.html`` of all images. Returns the summary.

    With ``bank`` (a :class:`~captum_daam.MemoryBank` or its file), the self-supervised
    variant explains each image's k-NN vote (or ``target``) instead of a classifier's
    logit. Images that cannot be read, or have more than ``max_pixels`` pixels (0: no
    cap), are skipped and listed in the summary's ``"skipped"``.
    ``queries`` picks the decomposition as for :class:`~captum_daam.DAAM` (``None``: the
    model's natural one). ``boxes`` maps file names to a box ``(x0, y0, x1, y1)`` in
    model-input pixels: those images get the share of the map's mass inside it.

    Example::

        >>> explain(load_model(None, None), [Path("cat.png")], Path("out"),
        ...         torch.device("cpu"), topk=2)
    """
    from tqdm import tqdm

    prepare_out(out)
    loaded.model.to(device)
    daam, names = _explainer(loaded, device, target, topk, bank, k, queries)

    def name_of(index: int) -> str:
        return names[index] if names is not None else f"class {index}"

    records: List[dict] = []
    shown_images, shown_flows = [], []  # for the viewer
    seconds_explaining = 0.0
    loaded_images = list(load_images(files, loaded.transform, max_pixels))
    good = [(f, x) for f, x in loaded_images if isinstance(x, torch.Tensor)]
    problems = [f"{f}: {x}, skipped" for f, x in loaded_images if isinstance(x, str)]
    bar = tqdm(total=len(good), desc="explaining", unit="img", disable=not progress)
    for start in range(0, len(good), batch_size):
        chunk = good[start : start + batch_size]
        images = torch.stack([x for _, x in chunk]).to(device)
        begin = time.perf_counter()
        flows, predictions = _explain_batch(daam, images, target, topk, bank is not None, name_of)
        seconds_explaining += time.perf_counter() - begin
        contributions = [f.contributions().cpu() for f in flows]
        if html:
            shown_images.append(images.cpu())
            shown_flows.append(flows)
        for i, (file, image) in enumerate(chunk):
            box = boxes.get(file.name) if boxes is not None else None
            explained = _write_image(
                file, image, i, flows, contributions, loaded, names, name_of, out, gif, box
            )
            records.append(
                {"file": str(file), "predictions": predictions[i], "explained": explained}
            )
        bar.update(len(chunk))
    bar.close()
    if html and shown_images:
        from ..result import DAAMFlow
        from ..viewer import write_flow_viewer

        write_flow_viewer(
            out / "viewer.html",
            torch.cat(shown_images),
            [DAAMFlow.cat([chunk[j] for chunk in shown_flows]) for j in range(len(shown_flows[0]))],
            class_names=names,
            image_names=[f.name for f, _ in good],
            mean=loaded.mean,
            std=loaded.std,
        )
    summary = {
        "model": loaded.name,
        "device": str(device),
        "layers": list(daam.layer_names),
        "images": records,
        "skipped": problems,
        "timings": {
            "explain_seconds": round(seconds_explaining, 3),
            "ms_per_image": round(1e3 * seconds_explaining / max(len(good), 1), 1),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def demo(
    out: Path,
    num_images: int = 6,
    seed: int = 2026,
    gif: bool = False,
    html: bool = False,
    progress: bool = True,
) -> dict:
    """The main job on the embedded default: render synthetic images (saved under
    ``out/inputs``), explain them with the embedded ViT, and score the maps against the
    objects' exact boxes.

    Example::

        >>> demo(Path("daam-demo"), num_images=4)["localisation"]["mean_energy_in_box"]
    """
    from PIL import Image

    from ..zoo import CLASS_NAMES, SyntheticShapes, denormalize

    prepare_out(out)
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    dataset = SyntheticShapes(num_images, seed=seed)
    files, boxes = [], {}
    for i in range(num_images):
        image, label, box = dataset[i]
        pixels = (denormalize(image).clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
        file = inputs / f"shape_{i:02d}_{CLASS_NAMES[label]}.png"
        Image.fromarray(pixels.numpy()).save(file)
        files.append(file)
        boxes[file.name] = [float(v) for v in box]
    summary = explain(
        load_model(None, None),
        files,
        out,
        torch.device("cpu"),
        gif=gif,
        html=html,
        boxes=boxes,
        progress=progress,
    )
    energies = [e["energy_in_box"] for r in summary["images"] for e in r["explained"]]
    areas = [e["box_area_fraction"] for r in summary["images"] for e in r["explained"]]
    summary["localisation"] = {
        "mean_energy_in_box": round(float(np.mean(energies)), 4),
        "mean_box_area_fraction": round(float(np.mean(areas)), 4),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def explain_command(args: argparse.Namespace) -> dict:
    """``captum-daam explain``: the options checked and every file the user named read
    (output folder, images, bank) before the model is loaded; then :func:`explain`.
    Returns its summary; the images skipped are reported on stderr."""
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.max_pixels < 0:
        raise UserError(f"--max-pixels must be 0 (no cap) or more, not {args.max_pixels}")
    if args.ssl != (args.bank is not None):
        raise UserError("--ssl and --bank FILE go together")
    out, device = Path(args.out), choose_device(args.device)
    prepare_out(out)  # before any slow model loading
    files, skipped = collect_images(args.paths)
    for line in skipped:
        print(f"captum-daam: {line}", file=sys.stderr)
    if not files:
        raise UserError("no image files found in " + ", ".join(args.paths))
    bank = load_bank(Path(args.bank), device) if args.bank else None
    return explain(
        load_model(args.model, args.weights),
        files,
        out,
        device,
        args.batch_size,
        args.target,
        args.topk,
        args.gif,
        args.html,
        bank=bank,
        k=args.k,
        queries=args.queries,
        max_pixels=args.max_pixels,
    )


__all__ = ["demo", "explain", "explain_command", "load_bank"]
