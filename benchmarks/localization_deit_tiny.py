"""Mass of DAAM maps inside the ground-truth boxes, DeiT-Tiny on the real ImageNet images.

    CAPTUM_DAAM_DATA=../shared/data python benchmarks/localization_deit_tiny.py [--queries readout all]

The 400 images (sorted by file name) are split in two: even positions ("select") are
where thresholds and settings are chosen, odd positions ("report") where they are
reported and tested (tests/test_real_weights.py). Prints one line per split and target
choice: top-1 accuracy, the mean energy inside the boxes (pointing game), the mean box
area fraction (a uniform map's energy), the mean and median ratio energy / area, and the
share of images whose ratio exceeds 1, 1.1 and 1.25.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import timm
import torch
from timm.data import create_transform, resolve_data_config

from captum_daam import DAAM, upsample
from captum_daam.evaluation import ImageNetSubset, energy_in_boxes, load_subset_boxes


def load_deit_tiny(data: Path) -> torch.nn.Module:
    weights = data / "deit_tiny_patch16_224" / "model.safetensors"
    return timm.create_model(
        "deit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=str(weights))
    ).eval()


def split_files(data: Path, split: str):
    files = [e.file for e in load_subset_boxes(data / "imagenet_val_subset" / "boxes.csv")]
    return files[0::2] if split == "select" else files[1::2]


def localisation(
    model, data: Path, split: str, use_label: bool, batch_size: int = 25, queries: str = "readout"
):
    transform = create_transform(**resolve_data_config({}, model=model))
    dataset = ImageNetSubset(data / "imagenet_val_subset", transform, split_files(data, split))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    daam = DAAM(model, queries=queries)
    energies, areas, correct = [], [], []
    for images, labels, masks in loader:
        flow = daam.attribute(images, target=labels if use_label else None, return_flow=True)
        maps = upsample(flow.final, masks.shape[-2:])
        energies.append(energy_in_boxes(maps, masks))
        areas.append(masks.float().mean(dim=(-2, -1)).double())
        with torch.no_grad():
            correct.append(model(images).argmax(1) == labels)
    return torch.cat(energies), torch.cat(areas), torch.cat(correct)


def summary(energy, area, correct) -> str:
    ratio = energy / area
    shares = " ".join(f">{t}:{(ratio > t).float().mean():.3f}" for t in (1.0, 1.1, 1.25))
    return (
        f"n={len(energy)} top1={correct.float().mean():.3f} energy={energy.mean():.3f} "
        f"uniform={area.mean():.3f} ratio mean={ratio.mean():.3f} "
        f"median={ratio.median():.3f} share {shares}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("CAPTUM_DAAM_DATA", "../shared/data"))
    parser.add_argument("--splits", nargs="+", default=["select", "report"])
    parser.add_argument(
        "--queries",
        nargs="+",
        choices=("readout", "all"),
        default=["readout"],
        help="DAAM modes to compare (docs/method.md)",
    )
    args = parser.parse_args()
    data = Path(args.data)
    model = load_deit_tiny(data)
    for split in args.splits:
        for queries in args.queries:
            for use_label in (True, False):
                start = time.perf_counter()
                result = localisation(model, data, split, use_label, queries=queries)
                name = "label" if use_label else "predicted"
                print(
                    f"{split:7s} queries={queries:7s} target={name:9s} "
                    f"{summary(*result)} ({time.perf_counter() - start:.0f}s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
