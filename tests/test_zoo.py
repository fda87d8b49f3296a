"""Tests of the embedded default model and its synthetic data generator."""

from __future__ import annotations

import math

import pytest
import torch

from captum_daam.zoo import (
    CLASS_NAMES,
    DEFAULT_MODEL_INFO,
    DEFAULT_WEIGHTS_PATH,
    MEAN,
    STD,
    SyntheticShapes,
    create_default_model,
    denormalize,
    load_default_model,
    normalize,
    read_checkpoint_metadata,
)
from captum_daam.zoo.train import hflip_augment, patch_pixels, token_labels

#: A seed used neither for training nor for the accuracy stated in the metadata.
FRESH_SEED = 2_024_001
ACCURACY_MARGIN = 0.03


@pytest.fixture(scope="module")
def fresh_batch():
    # 2 000 images: the accuracy's standard error (~0.009) is well inside the margin.
    return SyntheticShapes(2000, seed=FRESH_SEED).batch()


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_default_model()


# ----------------------------------------------------------------------- generator


def test_item_types_and_shapes() -> None:
    ds = SyntheticShapes(4, seed=3)
    image, label, box = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < len(CLASS_NAMES)
    assert box.shape == (4,) and box.dtype == torch.float32
    assert len(ds) == 4
    with pytest.raises(IndexError):
        ds[4]
    assert torch.equal(ds[-1][0], ds[3][0])


def test_same_seed_and_index_reproduce_item() -> None:
    # Item i depends only on (seed, i): dataset length and access order do not matter.
    a = SyntheticShapes(10, seed=7)
    b = SyntheticShapes(1000, seed=7)
    for i in (9, 0, 5):
        sa, sb = a.sample(i), b.sample(i)
        assert torch.equal(sa.image, sb.image)
        assert sa.label == sb.label
        assert torch.equal(sa.box, sb.box)
        assert torch.equal(sa.mask, sb.mask)


def test_different_seeds_and_indices_differ() -> None:
    a, b = SyntheticShapes(8, seed=0), SyntheticShapes(8, seed=1)
    for i in range(8):
        assert not torch.equal(a[i][0], b[i][0])
    assert not torch.equal(a[0][0], a[1][0])


def test_boxes_are_tight_around_the_object_mask(fresh_batch) -> None:
    size = 64
    for box, mask in zip(fresh_batch.boxes[:200], fresh_batch.masks[:200]):
        x0, y0, x1, y1 = box.tolist()
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert all(float(v).is_integer() for v in (x0, y0, x1, y1))
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert len(ys) > 0
        # Every object pixel lies inside the box, and the box touches the object on all sides.
        assert xs.min() == x0 and xs.max() == x1 - 1
        assert ys.min() == y0 and ys.max() == y1 - 1
        # Objects are 2..5 patches wide (nominal radius 17%..28% of the side).
        assert 10 <= x1 - x0 <= 40 and 10 <= y1 - y0 <= 40


def test_mask_marks_exactly_the_drawn_object() -> None:
    ds = SyntheticShapes(30, seed=11)
    for i in range(30):
        with_obj, without = ds.sample(i), ds.sample(i, with_object=False)
        assert with_obj.label == without.label and torch.equal(with_obj.mask, without.mask)
        outside = ~with_obj.mask
        # The scene is identical away from the object ...
        assert torch.equal(with_obj.image[:, outside], without.image[:, outside])
        # ... and the object visibly changes the pixels it covers.
        diff = (denormalize(with_obj.image) - denormalize(without.image))[:, with_obj.mask]
        assert diff.abs().mean() > 0.1


def test_label_balance(fresh_batch) -> None:
    counts = torch.bincount(fresh_batch.labels, minlength=len(CLASS_NAMES)).float()
    expected = len(fresh_batch) / len(CLASS_NAMES)
    assert counts.min() >= 0.75 * expected and counts.max() <= 1.25 * expected


def test_normalisation_round_trip(fresh_batch) -> None:
    images = fresh_batch.images[:8]
    raw = denormalize(images)
    assert raw.min() >= 0 and raw.max() <= 1
    assert torch.allclose(normalize(raw), images, atol=1e-5)
    assert len(MEAN) == len(STD) == 3


def test_token_labels_and_augmentation_stay_aligned() -> None:
    batch = SyntheticShapes(6, seed=5).batch()
    targets = token_labels(batch.masks, batch.labels, patch_size=8, cover=0.25)
    assert targets.shape == (6, 1, 8, 8)
    for t, label in zip(targets, batch.labels):
        assert set(t.unique().tolist()) <= {0, -100, int(label) + 1}
        assert (t == int(label) + 1).any()
    pixels = patch_pixels(batch.masks, patch_size=8)
    assert pixels.shape == (6, 64, 64)
    assert torch.equal(pixels.sum((1, 2)), batch.masks.sum((1, 2)).float())
    images, masks = hflip_augment(torch.Generator().manual_seed(0), batch.images, batch.masks)
    flipped = [not torch.equal(x, x0) for x, x0 in zip(images, batch.images)]
    assert any(flipped)
    for image, mask, image0, mask0, f in zip(images, masks, batch.images, batch.masks, flipped):
        # Image and mask get the same flip (noisy images are never mirror-symmetric).
        assert torch.equal(image, image0.flip(-1) if f else image0)
        assert torch.equal(mask, mask0.flip(-1) if f else mask0)


# ---------------------------------------------------------------------------- model


def test_architecture() -> None:
    m = create_default_model()
    info = DEFAULT_MODEL_INFO
    assert m.cls_token is not None and m.global_pool == "token"
    assert m.patch_embed.grid_size == (info.grid_size, info.grid_size) == (8, 8)
    assert len(m.blocks) == info.depth and m.num_classes == len(CLASS_NAMES)
    out = m(torch.zeros(2, 3, info.image_size, info.image_size))
    assert out.shape == (2, len(CLASS_NAMES))


def test_checkpoint_is_small_and_carries_the_metadata() -> None:
    assert DEFAULT_WEIGHTS_PATH.is_file()
    assert DEFAULT_WEIGHTS_PATH.stat().st_size <= 3 * 1024 * 1024
    meta = read_checkpoint_metadata()
    info = DEFAULT_MODEL_INFO
    assert tuple(meta["class_names"]) == info.class_names == CLASS_NAMES
    assert tuple(meta["mean"]) == info.mean and tuple(meta["std"]) == info.std
    for key in (
        "image_size",
        "patch_size",
        "embed_dim",
        "depth",
        "num_heads",
        "mlp_ratio",
        "test_seed",
    ):
        assert meta[key] == getattr(info, key), key
    assert math.isclose(meta["test_accuracy"], info.test_accuracy)
    assert info.test_accuracy >= 0.9


def test_load_default_model(model) -> None:
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_stated_accuracy_on_fresh_data(model, fresh_batch) -> None:
    with torch.no_grad():
        pred = model(fresh_batch.images).argmax(-1)
    accuracy = (pred == fresh_batch.labels).float().mean().item()
    assert accuracy >= DEFAULT_MODEL_INFO.test_accuracy - ACCURACY_MARGIN, accuracy


def test_model_relies_on_the_object(model) -> None:
    # Same scenes with the object deleted: accuracy must fall to about chance (1/6).
    ds = SyntheticShapes(300, seed=FRESH_SEED)
    deleted = ds.batch(with_object=False)
    with torch.no_grad():
        pred = model(deleted.images).argmax(-1)
    accuracy = (pred == deleted.labels).float().mean().item()
    assert accuracy < 0.3, accuracy


def test_daam_localises_objects_on_the_embedded_model(model) -> None:
    """DAAM's final map (predicted class) puts most of its mass inside the object's box.
    Measured on 300 images of seed 31337: energy 0.644 vs box area 0.189, above the
    area on 100% of images."""
    from captum_daam import DAAM, upsample
    from captum_daam.evaluation import boxes_mask, energy_in_boxes

    batch = SyntheticShapes(200, seed=FRESH_SEED + 1).batch()
    flow = DAAM(model).attribute(batch.images, return_flow=True)
    size = tuple(batch.images.shape[-2:])
    masks = torch.stack([boxes_mask(box[None], size) for box in batch.boxes])
    energy = energy_in_boxes(upsample(flow.final, size), masks)
    area = masks.double().mean(dim=(1, 2))
    assert energy.mean() > 2 * area.mean(), (energy.mean(), area.mean())
    assert (energy > area).double().mean() >= 0.9
