"""DeiT-Tiny with its real ImageNet weights on real ImageNet validation images.

Needs ``CAPTUM_DAAM_DATA`` (skipped otherwise). Thresholds were chosen on the "select"
half of the images (even positions by file name) with
``benchmarks/localization_deit_tiny.py``; the tests run on the other, "report" half.
"""

import sys
from pathlib import Path

import pytest
import torch
from timm.data import create_transform, resolve_data_config

from all_queries_reference import reference_vit
from assertions import assert_close_per_row
from captum_daam import DAAM, upsample
from captum_daam.evaluation import ImageNetSubset, energy_in_boxes
from reference import reference_daam

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from localization_deit_tiny import load_deit_tiny, split_files  # noqa: E402


@pytest.fixture(scope="module")
def deit_tiny(data_dir):
    return load_deit_tiny(data_dir)


@pytest.fixture(scope="module")
def report_images(deit_tiny, data_dir):
    transform = create_transform(**resolve_data_config({}, model=deit_tiny))
    return ImageNetSubset(
        data_dir / "imagenet_val_subset", transform, split_files(data_dir, "report")
    )


def test_real_weights_match_the_explicit_reference(deit_tiny, report_images):
    images = torch.stack([report_images[i][0] for i in range(2)])
    flow = DAAM(deit_tiny).attribute(images, return_flow=True)
    ref = reference_daam(
        deit_tiny, [b.attn for b in deit_tiny.blocks], images, grid_size=flow.grid_size
    )
    assert torch.equal(flow.targets, ref.targets)
    assert_close_per_row(
        flow.token_relevance, ref.token_relevance, rtol=1e-3, atol=2e-3
    )  # float32 through 12 blocks


def test_all_queries_mode_matches_its_reference_on_real_weights(deit_tiny, report_images):
    images = torch.stack([report_images[i][0] for i in range(2, 3)])
    flow = DAAM(deit_tiny, queries="all").attribute(images, return_flow=True)
    ref = reference_vit(deit_tiny, images)
    assert torch.equal(flow.targets, ref.targets)
    assert_close_per_row(
        flow.token_relevance, ref.token_relevance, rtol=1e-3, atol=2e-3
    )  # float32 through 12 blocks


def test_maps_put_more_mass_inside_boxes_than_uniform(deit_tiny, report_images):
    loader = torch.utils.data.DataLoader(report_images, batch_size=25)
    daam = DAAM(deit_tiny)
    energies, areas, hits = [], [], []
    for images, labels, masks in loader:
        flow = daam.attribute(images, return_flow=True)  # the predicted class
        energies.append(energy_in_boxes(upsample(flow.final, masks.shape[-2:]), masks))
        areas.append(masks.double().mean(dim=(-2, -1)))
        hits.append(flow.targets == labels)
    energy, area, accuracy = torch.cat(energies), torch.cat(areas), torch.cat(hits).double()
    ratio = energy / area
    figures = (
        f"n={len(energy)} top1={accuracy.mean():.3f} energy={energy.mean():.3f} "
        f"uniform={area.mean():.3f} share(ratio>1)={(ratio > 1).double().mean():.3f}"
    )
    print(figures)
    assert accuracy.mean() > 0.7, figures  # the weights are the real ones
    # Select half: energy 0.732 vs uniform 0.583; ratio > 1 on 86.5% of images.
    assert (ratio > 1).double().mean() >= 0.75, figures
    assert energy.mean() - area.mean() >= 0.08, figures
