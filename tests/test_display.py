"""The paper's display mappings and upsampling."""

import torch
from captum.attr import LayerAttribution
from hypothesis import given
from hypothesis import strategies as st

from captum_daam import DAAM, linear_mapping, sigmoid_mapping, upsample
from families import build

flows = st.builds(
    lambda n, b, h, w, seed: torch.rand(
        n, b, h, w, generator=torch.Generator().manual_seed(seed)
    ).cumsum(1),
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 2**31 - 1),
)


@given(flows)
def test_linear_mapping_is_one_global_min_max_per_example(flow):
    mapped = linear_mapping(flow)
    assert mapped.shape == flow.shape
    for example, original in zip(mapped, flow):
        if original.max() > original.min():
            assert example.min() == 0 and torch.isclose(example.max(), torch.tensor(1.0))
            expected = (original - original.min()) / (original.max() - original.min())
            torch.testing.assert_close(example, expected)
        else:
            assert torch.all(example == 0)


@given(flows)
def test_sigmoid_mapping_matches_the_formula(flow):
    mapped = sigmoid_mapping(flow)
    peak = flow[:, -1].amax(dim=(-2, -1))
    for n in range(flow.shape[0]):
        for b in range(flow.shape[1]):
            frame = torch.sigmoid(5 * flow[n, b] / peak[n]) - 0.5
            span = frame.max() - frame.min()
            expected = (frame - frame.min()) / span if span > 0 else torch.zeros_like(frame)
            torch.testing.assert_close(mapped[n, b], expected)
    assert torch.all((mapped >= 0) & (mapped <= 1))


def test_sigmoid_mapping_keeps_order_within_frames():
    flow = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [4.0, 8.0]]]])
    mapped = sigmoid_mapping(flow)
    for frame, original in zip(mapped[0], flow[0]):
        assert torch.equal(frame.flatten().argsort(), original.flatten().argsort())


def test_zero_flow_maps_to_zero():
    flow = torch.zeros(1, 3, 2, 2)
    assert torch.all(linear_mapping(flow) == 0)
    assert torch.all(sigmoid_mapping(flow) == 0)


def test_upsampling_matches_captum_and_flow_helper():
    model = build("dynamic", torch.float32)
    images = torch.randn(2, 3, 24, 40)
    daam = DAAM(model)
    flow = daam.attribute(images, return_flow=True)
    final = daam.attribute(images)
    assert final.shape == (2, 1, 3, 5) and flow.grid_size == (3, 5)
    up = upsample(final, (24, 40))
    torch.testing.assert_close(up, LayerAttribution.interpolate(final, (24, 40), "bilinear"))
    assert flow.upsampled().shape == (2, flow.num_blocks, 24, 40)
    assert flow.upsampled("block_maps", size=(6, 10), mode="nearest").shape[-2:] == (6, 10)
