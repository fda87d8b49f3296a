"""Boxes follow the image through the evaluation transform; pointing-game energy."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from captum_daam.evaluation import boxes_mask, boxes_through_transform, energy_in_boxes


@given(
    height=st.integers(60, 300),
    width=st.integers(60, 300),
    frac=st.tuples(*[st.floats(0.05, 0.95)] * 4),
    crop_pct=st.sampled_from([0.875, 0.9, 1.0]),
)
def test_box_follows_painted_rectangle(height, width, frac, crop_pct):
    x0, x1 = sorted((frac[0] * width, frac[1] * width))
    y0, y1 = sorted((frac[2] * height, frac[3] * height))
    x0, y0, x1, y1 = int(x0), int(y0), max(int(x1), int(x0) + 12), max(int(y1), int(y0) + 12)
    x1, y1 = min(x1, width), min(y1, height)
    canvas = torch.zeros(height, width, dtype=torch.uint8)
    canvas[y0:y1, x0:x1] = 255
    image = Image.fromarray(canvas.numpy()).convert("RGB")
    transform = create_transform(
        input_size=(3, 64, 64),
        crop_pct=crop_pct,
        interpolation="bilinear",
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    painted = transform(image)[0] > 0.5
    boxes, size = boxes_through_transform(
        torch.tensor([[x0, y0, x1, y1]]), (height, width), transform
    )
    assert size == (64, 64)
    # Edges may move by a pixel through resampling: the painted rectangle lies between
    # the box shrunk and grown by that much.
    inner = boxes_mask(boxes + torch.tensor([[1.0, 1.0, -1.0, -1.0]]), size)
    outer = boxes_mask(boxes + torch.tensor([[-1.5, -1.5, 1.5, 1.5]]), size)
    assert torch.all(painted[inner]) and not torch.any(painted & ~outer)


def test_unknown_geometric_transform_is_refused():
    with pytest.raises(ValueError, match="RandomHorizontalFlip"):
        boxes_through_transform(
            torch.tensor([[0, 0, 5, 5]]), (10, 10), T.Compose([T.RandomHorizontalFlip()])
        )


def test_energy_in_boxes():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    maps = torch.zeros(3, 1, 4, 4)
    maps[0, 0, 0, 0] = 2.0  # all inside
    maps[1] = 1.0  # uniform: the area fraction
    energy = energy_in_boxes(maps, masks)  # maps[2] has no mass
    torch.testing.assert_close(energy, torch.tensor([1.0, 0.25, 0.0]))
