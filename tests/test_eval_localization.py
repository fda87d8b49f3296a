"""Box localisation: predicted boxes, IoUs, box accuracy, MaxBoxAcc, tau choice."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from captum_daam.evaluation import (
    box_accuracy,
    box_energy,
    box_iou,
    choose_tau,
    largest_component_box,
    largest_component_boxes,
    localization_ious,
    localization_summary,
    max_box_acc,
)
from captum_daam.zoo import SyntheticShapes


def _reference_ious(maps, boxes, taus):
    """Slow reference: one 2-D labelling per map and tau, explicit loops for the IoU
    (pixel-edge boxes: a component over columns c0..c1 is [c0, c1 + 1))."""
    out = np.zeros((len(maps), len(taus)))
    for n, (m, truth) in enumerate(zip(maps, boxes)):
        m = m.numpy().astype(np.float64)
        span = m.max() - m.min()
        norm = (m - m.min()) / span if span > 0 else np.zeros_like(m)
        for t, tau in enumerate(taus):
            labels, count = ndimage.label(norm >= tau, structure=np.ones((3, 3)))
            if count == 0:
                continue
            sizes = [(labels == k).sum() for k in range(1, count + 1)]
            ys, xs = np.nonzero(labels == 1 + int(np.argmax(sizes)))
            pred = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            best = 0.0
            for x0, y0, x1, y1 in truth.tolist():
                iw = max(0.0, min(pred[2], x1) - max(pred[0], x0))
                ih = max(0.0, min(pred[3], y1) - max(pred[1], y0))
                inter = iw * ih
                union = (pred[2] - pred[0]) * (pred[3] - pred[1]) + (x1 - x0) * (y1 - y0) - inter
                best = max(best, inter / union)
            out[n, t] = best
    return torch.from_numpy(out)


def _hand_map():
    m = torch.zeros(10, 10)
    m[2:6, 3:8] = 1.0  # the largest blob: columns 3..7, rows 2..5 -> box (3, 2, 8, 6)
    m[8, 8:10] = 0.9  # a smaller blob
    return m


def test_largest_component_box_by_hand():
    m = _hand_map()
    boxes = largest_component_boxes(m, [0.0, 0.5, 0.95])
    expected = torch.tensor([[0, 0, 10, 10], [3, 2, 8, 6], [3, 2, 8, 6]], dtype=torch.float64)
    torch.testing.assert_close(boxes, expected)
    torch.testing.assert_close(largest_component_box(m, 0.5), expected[1])
    # No pixel of a constant map reaches tau > 0: no box.
    assert torch.isnan(largest_component_box(torch.ones(4, 4), 0.5)).all()


def test_components_are_8_connected_and_ties_go_to_raster_order():
    diagonal = torch.zeros(6, 6)
    diagonal[[0, 1, 2], [0, 1, 2]] = 1.0  # connected only through corners
    diagonal[4, 4:6] = 1.0  # two pixels: smaller than the diagonal
    torch.testing.assert_close(
        largest_component_box(diagonal, 0.5),
        torch.tensor([0.0, 0.0, 3.0, 3.0], dtype=torch.float64),
    )
    twins = torch.zeros(5, 7)
    twins[3, 4:6] = 1.0
    twins[0, 0:2] = 1.0  # same size, earlier in raster order
    torch.testing.assert_close(
        largest_component_box(twins, 0.5), torch.tensor([0.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    )


def test_box_iou_by_hand():
    iou = box_iou(
        torch.tensor([3.0, 2.0, 8.0, 6.0]),
        torch.tensor(
            [
                [3.0, 2.0, 8.0, 6.0],
                [5.0, 2.0, 10.0, 6.0],
                [8.0, 6.0, 9.0, 9.0],
                [0.0, 0.0, 10.0, 10.0],
            ]
        ),
    )
    # 20/20; overlap 3x4=12 of union 20+20-12=28; touching corner only; 20/100.
    torch.testing.assert_close(iou, torch.tensor([1.0, 12 / 28, 0.0, 0.2], dtype=torch.float64))
    assert (
        box_iou(torch.full((4,), float("nan")), torch.tensor([[0.0, 0.0, 1.0, 1.0]])).item() == 0.0
    )


def test_localization_ious_by_hand():
    maps = torch.stack([_hand_map(), torch.ones(10, 10)])
    boxes = [
        torch.tensor([[5.0, 2.0, 10.0, 6.0], [3.0, 2.0, 8.0, 7.0]]),  # best: 20/25
        torch.tensor([[0.0, 0.0, 5.0, 10.0]]),
    ]
    ious = localization_ious(maps, boxes, taus=[0.0, 0.5])
    expected = torch.tensor([[25 / 100, 20 / 25], [50 / 100, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(ious, expected)
    # (N, 1, H, W) maps are accepted.
    torch.testing.assert_close(localization_ious(maps[:, None], boxes, [0.0, 0.5]), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_localization_ious_match_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(5, 1, 4, 4, generator=g)
    maps = torch.nn.functional.interpolate(coarse, size=(24, 20), mode="bilinear")[:, 0]
    maps[0] = torch.round(maps[0] * 4)  # plateaus and ties
    boxes = []
    for _ in range(5):
        k = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(k, 4, generator=g) * torch.tensor([20.0, 24.0, 20.0, 24.0])
        boxes.append(
            torch.stack(
                [
                    torch.minimum(xy[:, 0], xy[:, 2]),
                    torch.minimum(xy[:, 1], xy[:, 3]),
                    torch.maximum(xy[:, 0], xy[:, 2]) + 1,
                    torch.maximum(xy[:, 1], xy[:, 3]) + 1,
                ],
                dim=1,
            )
            .clamp(max=20.0)
            .to(torch.float64)
        )
    taus = np.linspace(0.0, 1.0, 23)
    torch.testing.assert_close(
        localization_ious(maps, boxes, taus), _reference_ious(maps, boxes, taus)
    )


def test_synthetic_object_mask_gives_its_own_box():
    """The convention matches the synthetic data's: the mask as a map gives the box."""
    data = SyntheticShapes(6, seed=3, image_size=48)
    for i in range(len(data)):
        sample = data.sample(i)
        mask = sample.mask.to(torch.float64)
        labels, count = ndimage.label(sample.mask.numpy(), structure=np.ones((3, 3)))
        assert count == 1  # every shape is one 8-connected piece
        torch.testing.assert_close(largest_component_box(mask, 0.5), sample.box.to(torch.float64))
        assert localization_ious(mask[None], [sample.box[None]], [0.5]).item() == 1.0


def _brute_max_box_acc(ious, deltas):
    out = []
    for d in deltas:
        best = 0.0
        for t in range(ious.shape[1]):
            hits = sum(1 for n in range(ious.shape[0]) if ious[n, t] >= d)
            best = max(best, hits / ious.shape[0])
        out.append(best)
    return torch.tensor(out, dtype=torch.float64)


@given(st.integers(0, 2**31 - 1), st.integers(1, 12), st.integers(1, 9))
def test_max_box_acc_matches_brute_force(seed, images, taus):
    ious = torch.rand(
        images, taus, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    ious[ious < 0.2] = 0.5  # exact hits on a threshold count
    deltas = (0.3, 0.5, 0.7)
    torch.testing.assert_close(max_box_acc(ious, deltas), _brute_max_box_acc(ious, deltas))
    torch.testing.assert_close(
        box_accuracy(ious, 0.5),
        torch.tensor(
            [(ious[:, t] >= 0.5).double().mean() for t in range(taus)], dtype=torch.float64
        ),
    )


def test_choose_tau_and_summary_use_the_tuning_split():
    taus = [0.1, 0.2, 0.3]
    tuning = torch.tensor([[0.2, 0.6, 0.6], [0.1, 0.7, 0.2], [0.0, 0.4, 0.9]], dtype=torch.float64)
    # accuracies at 0.5: 0, 2/3, 2/3 -> the first best, 0.2
    assert choose_tau(tuning, taus) == 0.2
    evaluation = torch.tensor([[0.1, 0.2, 0.9], [0.3, 0.6, 0.8]], dtype=torch.float64)
    summary = localization_summary(evaluation, tuning, taus, energies=torch.tensor([0.5, 1.0]))
    assert summary["tau"] == 0.2  # not the evaluation split's best (0.3)
    assert summary["mean_iou"] == pytest.approx(0.4)
    assert summary["box_acc"] == pytest.approx(0.5)
    assert summary["max_box_acc@0.5"] == pytest.approx(1.0)  # at tau 0.3
    assert summary["max_box_acc@0.3"] == pytest.approx(1.0)
    assert summary["max_box_acc@0.7"] == pytest.approx(1.0)
    assert summary["max_box_acc_v2"] == pytest.approx(1.0)
    assert summary["energy"] == pytest.approx(0.75)
    assert summary["num_images"] == 2


@given(
    grid=st.lists(st.integers(0, 10), min_size=48, max_size=48),
    scale=st.floats(0.01, 100.0),
    offset=st.floats(-100.0, 100.0),
    box=st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(1, 3), st.integers(1, 3)),
)
def test_ious_invariant_to_map_scaling_and_image_order(grid, scale, offset, box):
    m = torch.tensor(grid, dtype=torch.float64).reshape(6, 8)
    m[0, 0], m[5, 7] = 0.0, 10.0  # value range exactly 0..10
    x0, y0, w, h = box
    truth = torch.tensor([[x0, y0, min(x0 + w, 8), min(y0 + h, 6)]], dtype=torch.float64)
    taus = (np.arange(10) + 0.5) / 10  # never on a normalised value k / 10
    base = localization_ious(m[None], [truth], taus)
    torch.testing.assert_close(localization_ious((m * scale + offset)[None], [truth], taus), base)
    other = torch.zeros(6, 8, dtype=torch.float64)
    other[1:3, 2:5] = 1.0
    other_truth = torch.tensor([[2.0, 1.0, 5.0, 3.0]], dtype=torch.float64)
    both = localization_ious(torch.stack([other, m]), [other_truth, truth], taus)
    torch.testing.assert_close(both[1:], base)
    torch.testing.assert_close(both[0], torch.ones(10, dtype=torch.float64))


def test_box_energy_by_hand():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0], m[0, 3, 3], m[0, 1, 1] = 2.0, 1.0, 1.0
    energy = box_energy(m, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])])
    torch.testing.assert_close(energy, torch.tensor([0.75], dtype=torch.float64))


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="upsample"):
        localization_ious(torch.rand(1, 4, 4), [torch.tensor([[0.0, 0.0, 30.0, 30.0]])])
    with pytest.raises(ValueError, match="2 maps but boxes for 1"):
        localization_ious(torch.rand(2, 4, 4), [torch.tensor([[0.0, 0.0, 3.0, 3.0]])])
    with pytest.raises(ValueError, match="no true box"):
        localization_ious(torch.rand(1, 4, 4), [torch.zeros(0, 4)])
    with pytest.raises(ValueError, match="NaN"):
        localization_ious(
            torch.full((1, 4, 4), float("nan")), [torch.tensor([[0.0, 0.0, 3.0, 3.0]])]
        )
    with pytest.raises(ValueError, match="one column per tau"):
        localization_summary(torch.rand(2, 3), torch.rand(2, 4), [0.1, 0.2, 0.3])
