"""The ``captum-daam`` command line: ``explain`` images with any timm ViT, or run the
``demo`` on the embedded default model, offline.

User errors (missing files, unknown model names, weights that do not fit, unwritable
output folders) print one line and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EMBEDDED = "embedded"


class UserError(Exception):
    """A problem with what the user asked for: reported as one line, exit status 2."""


@dataclass
class LoadedModel:
    model: nn.Module
    name: str
    transform: Callable
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    class_names: Optional[Sequence[str]]


def _state_dict_from(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable or not a checkpoint
        raise UserError(f"cannot read weights {path}: {error}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict")
    return state


def load_model(name: Optional[str], weights: Optional[str]) -> LoadedModel:
    """The embedded model (``name`` None or "embedded") or a timm model, with its
    preprocessing; ``weights`` loads a local .safetensors / .pth (strict)."""
    from timm.data import create_transform, resolve_data_config

    from .visualization import class_names_for

    if name in (None, EMBEDDED) and weights is None:
        from .zoo import DEFAULT_MODEL_INFO as info
        from .zoo import load_default_model

        config = dict(input_size=(3, info.image_size, info.image_size), mean=info.mean,
                      std=info.std, crop_pct=1.0, interpolation="bilinear")
        return LoadedModel(load_default_model(), EMBEDDED, create_transform(**config),
                           info.mean, info.std, info.class_names)
    if name in (None, EMBEDDED):
        raise UserError("--weights needs --model NAME (the timm model the weights fit)")

    import timm

    if not timm.is_model(name):
        raise UserError(f"unknown model name {name!r}; list names with timm.list_models()")
    try:
        if weights is None:
            model = timm.create_model(name, pretrained=True)
        else:
            state = _state_dict_from(Path(weights))
            head = state.get("head.weight")
            extra = {"num_classes": int(head.shape[0])} if head is not None else {}
            model = timm.create_model(name, pretrained=False, **extra)
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as error:
                first = str(error).splitlines()[1].strip() if "\n" in str(error) else error
                raise UserError(f"weights {weights} do not fit {name}: {first}") from None
    except UserError:
        raise
    except Exception as error:  # the hub cannot be reached, or similar
        raise UserError(
            f"could not load pretrained weights for {name} ({type(error).__name__}); "
            "offline? pass --weights PATH to a local .safetensors or .pth file"
        ) from None
    config = resolve_data_config({}, model=model)
    return LoadedModel(model.eval(), name, create_transform(**config), config["mean"],
                       config["std"], class_names_for(getattr(model, "num_classes", 0)))


def collect_images(paths: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Image files from files and folders; returns (files, problems skipped)."""
    files, skipped = [], []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(child)
                elif child.is_file():
                    skipped.append(f"{child}: not an image file, skipped")
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    return files, skipped


def _load_images(files: Sequence[Path], transform: Callable) -> Iterator[Tuple[Path, object]]:
    from PIL import Image, UnidentifiedImageError

    for file in files:
        try:
            with Image.open(file) as image:
                yield file, transform(image.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            yield file, error


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to {out}: {error.strerror or error}") from None


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA device is available")
    return torch.device(choice)


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
    bank: Optional[Path] = None,
    k: int = 20,
    queries: Optional[str] = None,
) -> dict:
    """Explain ``files`` and write, per image, the flow figure, the raw maps (.npz) and
    optionally a GIF, plus ``summary.json`` and optionally the interactive viewer
    ``viewer.html`` of all images. Returns the summary.

    With ``bank`` (a :class:`~captum_daam.MemoryBank` file), the self-supervised variant
    explains each image's k-NN vote (or ``target``) instead of a classifier's logit.
    ``queries`` picks the decomposition as for :class:`~captum_daam.DAAM` (``None``: the
    model's natural one)."""
    from tqdm import tqdm

    from . import DAAM
    from .errors import UnsupportedModelError
    from .evaluation import boxes_mask, energy_in_boxes
    from .visualization import flow_figure, flow_gif

    _prepare_out(out)
    model = loaded.model.to(device)
    names = loaded.class_names
    if bank is not None:
        from . import MemoryBank, SelfSupervisedDAAM

        if topk != 1:
            raise UserError("--topk does not apply with --ssl: the bank's vote is explained")
        try:
            daam = SelfSupervisedDAAM(model, MemoryBank.load(bank, device=device), k=k,
                                      queries=queries)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot use memory bank {bank}: {error}") from None
        names = None  # the bank's labels, not the model's classes
    else:
        try:
            daam = DAAM(model, queries=queries)
        except UnsupportedModelError as error:
            raise UserError(f"{loaded.name}: {error}") from None
        num_classes = int(getattr(model, "num_classes", 0) or 0)
        if target is not None and not 0 <= target < num_classes:
            raise UserError(
                f"--target {target} out of range: the model has {num_classes} classes")
        if not 1 <= topk <= max(num_classes, 1):
            raise UserError(f"--topk must lie in [1, {num_classes}]")

    def name_of(index: int) -> str:
        return names[index] if names is not None else f"class {index}"

    records, problems = [], []
    shown_images, shown_flows = [], []  # for the viewer
    seconds_explaining = 0.0
    loaded_images = list(_load_images(files, loaded.transform))
    good = [(f, x) for f, x in loaded_images if isinstance(x, torch.Tensor)]
    for file, error in loaded_images:
        if not isinstance(error, torch.Tensor):
            problems.append(f"{file}: cannot read image ({error}), skipped")
    bar = tqdm(total=len(good), desc="explaining", unit="img", disable=not progress)
    for start in range(0, len(good), batch_size):
        chunk = good[start : start + batch_size]
        images = torch.stack([x for _, x in chunk]).to(device)
        begin = time.perf_counter()
        if bank is not None:
            try:
                flow = daam.attribute(images, target=target, return_flow=True)
            except ValueError as error:  # e.g. a target class absent from the bank
                raise UserError(str(error)) from None
            per_image = 1
            predictions = [[{"class": int(c), "name": name_of(int(c)),
                             "vote_share": round(float(p), 5)}]
                           for c, p in zip(flow.voted_class, flow.vote_share)]
        else:
            with torch.no_grad():
                probabilities = daam.adapter.logits(model(images)).softmax(dim=1)
            top = probabilities.topk(min(5, probabilities.shape[1]), dim=1)
            if target is not None:
                targets = torch.full((len(chunk), 1), target, device=device)
            else:
                targets = top.indices[:, :topk]
            per_image = targets.shape[1]
            flow = daam.attribute(images.repeat_interleave(per_image, dim=0),
                                  target=targets.reshape(-1), return_flow=True)
            predictions = [
                [{"class": int(c), "name": name_of(int(c)), "probability": round(float(p), 5)}
                 for p, c in zip(top.values[i].tolist(), top.indices[i].tolist())]
                for i in range(len(chunk))
            ]
        seconds_explaining += time.perf_counter() - begin
        contributions = flow.contributions().cpu()
        if html:
            shown_images.append(images.cpu())
            shown_flows.append([flow.select(slice(j, None, per_image)) for j in range(per_image)])
        for i, (file, image) in enumerate(chunk):
            rows = slice(i * per_image, (i + 1) * per_image)
            stem = out / file.stem
            np.savez_compressed(
                f"{stem}_maps.npz",
                block_maps=flow.block_maps[rows].cpu().numpy(),
                accumulated=flow.accumulated[rows].cpu().numpy(),
                targets=flow.targets[rows].cpu().numpy(),
                scores=flow.scores[rows].cpu().numpy(),
                layer_names=np.array(flow.layer_names),
            )
            explained = []
            for j in range(rows.start, rows.stop):
                suffix = "" if per_image == 1 else f"_top{j - rows.start + 1}"
                flow_figure(image, flow, index=j, class_names=names, mean=loaded.mean,
                            std=loaded.std, path=f"{stem}_flow{suffix}.png")
                if gif:
                    flow_gif(image, flow, f"{stem}_flow{suffix}.gif", index=j,
                             mean=loaded.mean, std=loaded.std, scale=max(1, 256 // image.shape[-1]))
                cls = int(flow.targets[j])
                entry = {"class": cls, "name": name_of(cls), "score": float(flow.scores[j]),
                         "block_contributions": [round(float(c), 5) for c in contributions[j]]}
                if boxes is not None and file.name in boxes:
                    mask = boxes_mask(torch.tensor([boxes[file.name]]), tuple(image.shape[-2:]))
                    energy = energy_in_boxes(_upsampled(flow, j, image), mask[None])
                    entry["energy_in_box"] = round(float(energy[0]), 4)
                    entry["box_area_fraction"] = round(float(mask.double().mean()), 4)
                explained.append(entry)
            records.append({
                "file": str(file),
                "predictions": predictions[i],
                "explained": explained,
            })
        bar.update(len(chunk))
    bar.close()
    if html and shown_images:
        from .result import DAAMFlow
        from .viewer import write_flow_viewer

        write_flow_viewer(
            out / "viewer.html", torch.cat(shown_images),
            [DAAMFlow.cat([chunk[j] for chunk in shown_flows]) for j in range(len(shown_flows[0]))],
            class_names=names, image_names=[f.name for f, _ in good], mean=loaded.mean,
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


def _upsampled(flow, index: int, image: torch.Tensor) -> torch.Tensor:
    from .display import upsample

    return upsample(flow.final[index : index + 1].cpu().float(), tuple(image.shape[-2:]))


def demo(out: Path, num_images: int = 6, seed: int = 2026, gif: bool = False,
         html: bool = False, progress: bool = True) -> dict:
    """The main job on the embedded default: render synthetic images (saved under
    ``out/inputs``), explain them with the embedded ViT, and score the maps against the
    objects' exact boxes."""
    from PIL import Image

    from .zoo import CLASS_NAMES, SyntheticShapes, denormalize

    _prepare_out(out)
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
    summary = explain(load_model(None, None), files, out, torch.device("cpu"), gif=gif,
                      html=html, boxes=boxes, progress=progress)
    energies = [e["energy_in_box"] for r in summary["images"] for e in r["explained"]]
    areas = [e["box_area_fraction"] for r in summary["images"] for e in r["explained"]]
    summary["localisation"] = {
        "mean_energy_in_box": round(float(np.mean(energies)), 4),
        "mean_box_area_fraction": round(float(np.mean(areas)), 4),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _evaluation_dataset(kind: str, root: Optional[str], images: Optional[str],
                        num_images: int, transform: Callable):
    """The dataset of ``captum-daam evaluate --dataset KIND``."""
    from .evaluation import BoxDataset, SyntheticBoxes

    if kind == "synthetic":
        from .zoo import DEFAULT_MODEL_INFO

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


def evaluate_command(args: argparse.Namespace) -> Dict[str, object]:
    """``captum-daam evaluate``: every method on the same images, tau tuned on one split
    and numbers reported on the other, sanity checks on a few images; tables and plots
    in ``--out``. Runs sharded under ``torchrun`` (gloo on CPU, nccl on GPUs)."""
    import torch.distributed as dist

    from .evaluation import (
        randomization_test,
        sanity_comparison_figure,
        sanity_figure,
        sanity_table_markdown,
    )
    from .evaluation.methods import METHODS, available_methods, make_explainer
    from .evaluation.runner import evaluate, summarize, write_report

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    device = _device(args.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    methods = list(args.methods or available_methods(warn=False))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    for flag in ("faithfulness_images", "captum_metrics", "sanity"):
        if (getattr(args, flag) or 0) < 0:
            raise UserError(f"--{flag.replace('_', '-')} counts images; give 0 or more, "
                            f"not {getattr(args, flag)}")
    loaded = load_model(args.model, args.weights)
    model = loaded.model.to(device)
    dataset = _evaluation_dataset(args.dataset, args.root, args.images, args.num_images,
                                  loaded.transform)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    ids = [_item_id(dataset, i) for i in range(count)]
    order = sorted(range(count), key=lambda i: ids[i])
    if args.split == "parity":
        tuning, evaluation = order[0::2], order[1::2]
    else:
        tuning, evaluation = order[: count // 2], order[count // 2:]
    data = _OnDevice(dataset, device)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    options: Dict[str, Dict[str, object]] = {}
    for text in args.option or []:
        key, _, value = text.partition("=")
        method, _, name = key.partition(".")
        if not value or not name:
            raise UserError(f"--option {text!r}: write METHOD.NAME=VALUE, e.g. "
                            "integrated_gradients.n_steps=16")
        try:
            parsed: object = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        options.setdefault(method, {})[name] = parsed
    try:
        records = evaluate(model, data, methods, cache, target=args.target,
                           method_options=options,
                           batch_size=args.batch_size, faithfulness=not args.no_faithfulness,
                           deletion_steps=args.steps, indices=_interleave(tuning, evaluation),
                           faithfulness_indices=evaluation[: args.faithfulness_images],
                           captum_indices=evaluation[: args.captum_metrics])
    except (ImportError, ValueError) as error:
        raise UserError(str(error)) from None
    result: Dict[str, object] = {"rank": rank}
    if rank == 0:
        table = summarize(records, [ids[i] for i in tuning], [ids[i] for i in evaluation])
        header = (f"{loaded.name} on {args.dataset} ({len(evaluation)} evaluation images, "
                  f"tau tuned on {len(tuning)} others, split={args.split}, "
                  f"target={args.target})")
        write_report(records, table, out, [ids[i] for i in evaluation], header=header)
        result["table"] = table
    if args.sanity > 0:
        chosen = evaluation[: args.sanity]
        images = torch.stack([data[i][0] for i in chosen])
        labels = torch.tensor([data[i][1] for i in chosen], device=device)
        sanity_methods = args.sanity_methods or [m for m in methods if m != "scorecam"]
        lines = []
        for method in sanity_methods if rank == 0 else []:
            rows = []
            for mode in ("cascading", "independent"):
                rows += randomization_test(
                    model, lambda m, name=method: make_explainer(name, m, **options.get(name, {})),
                    images, labels, mode=mode)
            for row in rows:
                row["method"] = method
            sanity_figure(rows, out / f"sanity_{method}.png", title=method)
            lines += [f"### {method}", "", sanity_table_markdown(rows), ""]
            result.setdefault("sanity", []).extend(rows)  # type: ignore[union-attr]
        if lines:
            (out / "sanity.md").write_text("\n".join(lines))
            sanity_comparison_figure(result["sanity"], out / "sanity_spearman.png")  # type: ignore[arg-type]
    if rank == 0:
        (out / "evaluation.json").write_text(json.dumps(result, indent=1, default=float))
    if distributed:
        dist.barrier()
    return result


def _interleave(first: List[int], second: List[int]) -> List[int]:
    """``first[0], second[0], first[1], ...``: both splits grow together, so an
    interrupted run still has images to tune tau on and images to report on."""
    out = [i for pair in zip(first, second) for i in pair]
    shorter = min(len(first), len(second))
    return out + first[shorter:] + second[shorter:]


def _item_id(dataset: object, index: int) -> str:
    """An item's id without loading the image where the dataset allows it."""
    entries = getattr(dataset, "entries", None)
    if entries is not None:
        return str(entries[index].file)
    return str(dataset[index][3])  # type: ignore[index]


class _OnDevice(torch.utils.data.Dataset):
    """A box dataset whose images are moved to ``device``."""

    def __init__(self, dataset: torch.utils.data.Dataset, device: torch.device) -> None:
        self.dataset, self.device = dataset, device

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        image, label, boxes, image_id = self.dataset[index]
        return image.to(self.device), label, boxes, image_id


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captum-daam",
        description="Dynamic Accumulated Attention Maps for timm Vision Transformers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ex = commands.add_parser("explain", help="explain images or folders of images")
    ex.add_argument("paths", nargs="+", metavar="IMAGE_OR_FOLDER")
    ex.add_argument("--model", default=None,
                    help="timm model name (default: the embedded shapes ViT)")
    ex.add_argument("--weights", default=None, help="local .safetensors or .pth weights")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--target", type=int, default=None, help="class to explain")
    which.add_argument("--topk", type=int, default=1, help="explain the top-k classes")
    ex.add_argument("--out", default="daam-out", help="output folder")
    ex.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ex.add_argument("--batch-size", type=int, default=8)
    ex.add_argument("--gif", action="store_true", help="also write the flow as a GIF")
    ex.add_argument("--html", action="store_true",
                    help="also write viewer.html, an interactive offline flow viewer")
    ex.add_argument("--ssl", action="store_true",
                    help="self-supervised DAAM through a memory bank (needs --bank)")
    ex.add_argument("--bank", default=None, help="MemoryBank file (.safetensors) for --ssl")
    ex.add_argument("--k", type=int, default=20, help="neighbours for --ssl")
    ex.add_argument("--queries", choices=("readout", "all"), default=None,
                    help="decompose the class token's row (readout, the paper) or every "
                         "query (all: pooled models, Swin); default: the model's readout")
    ev = commands.add_parser(
        "evaluate", help="localisation, faithfulness and sanity checks of DAAM and its peers")
    ev.add_argument("--dataset", choices=("subset", "official", "xml", "synthetic"),
                    default="synthetic",
                    help="subset: ROOT/boxes.csv + ROOT/images; official: ROOT holds "
                         "localization.txt, class_labels.txt, image_sizes.txt and --images "
                         "the image folder; xml: ROOT holds per-image XML and --images the "
                         "images; synthetic: the embedded model's shapes (default)")
    ev.add_argument("--root", default=None)
    ev.add_argument("--images", default=None, help="image folder (official, xml)")
    ev.add_argument("--num-images", type=int, default=64, help="synthetic images")
    ev.add_argument("--limit", type=int, default=None, help="use the first N images only")
    ev.add_argument("--model", default=None,
                    help="timm model name (default: the embedded shapes ViT)")
    ev.add_argument("--weights", default=None, help="local .safetensors or .pth weights")
    ev.add_argument("--methods", nargs="+", default=None,
                    help="methods to compare (default: every available one)")
    ev.add_argument("--split", choices=("parity", "halves"), default="parity",
                    help="tau is tuned on even positions (by id) and reported on odd ones "
                         "(parity), or on the first and reported on the second half")
    ev.add_argument("--target", choices=("label", "predicted"), default="label")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--steps", type=int, default=14, help="deletion / insertion points")
    ev.add_argument("--no-faithfulness", action="store_true",
                    help="skip deletion / insertion")
    ev.add_argument("--faithfulness-images", type=int, default=None,
                    help="deletion / insertion on the first N evaluation images only "
                         "(default: all evaluation images; never the tuning ones)")
    ev.add_argument("--captum-metrics", type=int, default=0, metavar="N",
                    help="Captum's infidelity and sensitivity-max on the first N evaluation "
                         "images (default 0: sensitivity explains each image 10 more times)")
    ev.add_argument("--option", action="append", metavar="METHOD.NAME=VALUE",
                    help="a method option, e.g. integrated_gradients.n_steps=16 (repeatable)")
    ev.add_argument("--sanity", type=int, default=0,
                    help="run the randomisation sanity checks on N evaluation images")
    ev.add_argument("--sanity-methods", nargs="+", default=None)
    ev.add_argument("--out", default="daam-eval", help="output folder")
    ev.add_argument("--cache", default=None,
                    help="per-image record cache, to resume (default: OUT/cache)")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    dm = commands.add_parser("demo", help="the embedded model on synthetic images, offline")
    dm.add_argument("--out", default="daam-demo", help="output folder")
    dm.add_argument("--images", type=int, default=6)
    dm.add_argument("--gif", action="store_true")
    dm.add_argument("--html", action="store_true")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        start = time.perf_counter()
        if args.command == "evaluate":
            if args.batch_size < 1:
                raise UserError("--batch-size must be at least 1")
            result = evaluate_command(args)
            if "table" in result:
                from .evaluation.runner import markdown_table

                print(markdown_table(result["table"]))  # type: ignore[arg-type]
                print(f"wrote the evaluation to {args.out} "
                      f"({time.perf_counter() - start:.1f} s)")
            return 0
        if args.command == "demo":
            summary = demo(Path(args.out), args.images, gif=args.gif, html=args.html)
        else:
            if args.batch_size < 1:
                raise UserError("--batch-size must be at least 1")
            if args.ssl != (args.bank is not None):
                raise UserError("--ssl and --bank FILE go together")
            _prepare_out(Path(args.out))  # before any slow model loading
            files, skipped = collect_images(args.paths)
            for line in skipped:
                print(f"captum-daam: {line}", file=sys.stderr)
            if not files:
                raise UserError("no image files found in " + ", ".join(args.paths))
            summary = explain(load_model(args.model, args.weights), files, Path(args.out),
                              _device(args.device), args.batch_size, args.target,
                              args.topk, args.gif, args.html,
                              bank=Path(args.bank) if args.bank else None, k=args.k,
                              queries=args.queries)
        for line in summary["skipped"]:
            print(f"captum-daam: {line}", file=sys.stderr)
        if not summary["images"]:
            raise UserError("none of the images could be read")
    except UserError as error:
        print(f"captum-daam: error: {error}", file=sys.stderr)
        return 2
    for record in summary["images"]:
        best = record["explained"][0]
        print(f"{record['file']}: {best['name']} (score {best['score']:.2f})")
    if "localisation" in summary:
        loc = summary["localisation"]
        print(f"mass inside the object boxes: {loc['mean_energy_in_box']:.3f} "
              f"(a uniform map: {loc['mean_box_area_fraction']:.3f})")
    print(f"wrote {len(summary['images'])} explanations to {args.out} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
