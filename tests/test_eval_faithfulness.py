"""Deletion / insertion over patch tokens, and Captum's infidelity and sensitivity."""

import math

import pytest
import torch
from torch import nn

from captum_daam.evaluation import (
    blurred,
    captum_metrics,
    deletion_insertion,
    explain_in_input_space,
    patch_ranks,
)


class PatchLinear(nn.Module):
    """Two classes: logit 0 = sum_p w_p * (mean of patch p over pixels and channels),
    logit 1 = 0. A known linear function of the patches."""

    def __init__(self, weights: torch.Tensor, patch: int) -> None:
        super().__init__()
        self.weights = weights.to(torch.float64)
        self.patch = patch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        means = nn.functional.avg_pool2d(images.mean(1, keepdim=True), self.patch)[:, 0]
        logit = (means * self.weights).flatten(1).sum(1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _hand_case():
    # 8x8 image, 2x2 grid of 4x4 patches with constant values 1, 2 / 3, 4.
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    image = values.repeat_interleave(4, 0).repeat_interleave(4, 1)[None, None].repeat(1, 3, 1, 1)
    model = PatchLinear(torch.tensor([[1.0, -1.0], [0.5, 2.0]]), patch=4)
    # patch contributions: 1, -2 / 1.5, 8; map order: patch (0,1), (1,0), (1,1), (0,0)
    grid_map = torch.tensor([[[0.1, 0.4], [0.3, 0.2]]])
    return model, image, grid_map


def test_auc_by_hand():
    model, image, grid_map = _hand_case()
    result = deletion_insertion(model, image, 0, grid_map, grid_size=(2, 2), baseline="zeros")
    deletion = [_sigmoid(v) for v in (8.5, 10.5, 9.0, 1.0, 0.0)]
    insertion = [_sigmoid(v) for v in (0.0, -2.0, -0.5, 7.5, 8.5)]
    torch.testing.assert_close(
        result.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64)
    )
    torch.testing.assert_close(result.deletion[0], torch.tensor(deletion, dtype=torch.float64))
    torch.testing.assert_close(result.insertion[0], torch.tensor(insertion, dtype=torch.float64))
    trapezoid = lambda ys: 0.25 * (ys[0] / 2 + ys[1] + ys[2] + ys[3] + ys[4] / 2)  # noqa: E731
    assert result.deletion_auc.item() == pytest.approx(trapezoid(deletion), abs=1e-12)
    assert result.insertion_auc.item() == pytest.approx(trapezoid(insertion), abs=1e-12)
    assert result.targets.tolist() == [0]


def test_fewer_steps_high_resolution_maps_and_constant_baseline():
    model, image, grid_map = _hand_case()
    fine = grid_map.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]  # (1, 1, 8, 8)
    result = deletion_insertion(model, image, [0], fine, grid_size=(2, 2), steps=2, baseline=1.0)
    # Removed patches show 1.0: contributions become w_p * 1.
    deletion = [_sigmoid(v) for v in (8.5, 9.0 + 0.5 - 1.0 + 0.0, 1.0 - 1.0 + 0.5 + 2.0)]
    torch.testing.assert_close(result.fractions, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(result.deletion[0], torch.tensor(deletion, dtype=torch.float64))
    assert result.deletion_auc.item() == pytest.approx(
        0.5 * (deletion[0] / 2 + deletion[1] + deletion[2] / 2)
    )


def _reference_curves(model, images, targets, ranks, baseline, patch):
    """Slow reference: one perturbed image at a time, patches switched in rank order."""
    n, rows, cols = ranks.shape
    deletion = torch.zeros(n, rows * cols + 1, dtype=torch.float64)
    insertion = torch.zeros_like(deletion)
    for i in range(n):
        for k in range(rows * cols + 1):
            removed = torch.zeros(images.shape[-2:], dtype=torch.bool)
            for r in range(rows):
                for c in range(cols):
                    if ranks[i, r, c] < k:
                        removed[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = True
            deleted = torch.where(removed, baseline[i], images[i])
            inserted = torch.where(removed, images[i], baseline[i])
            for out, x in ((deletion, deleted), (insertion, inserted)):
                out[i, k] = torch.softmax(model(x[None]).double(), -1)[0, targets[i]]
    return deletion, insertion


def test_batched_curves_match_slow_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 12, 12, generator=g, dtype=torch.float64)
    model = PatchLinear(torch.randn(3, 3, generator=g), patch=4)
    maps = torch.rand(3, 3, 3, generator=g)
    maps[0] = 0.5  # all equal: raster order
    ranks = patch_ranks(maps, (3, 3))
    assert ranks[0].flatten().tolist() == list(range(9))
    expected_del, expected_ins = _reference_curves(
        model, images, [1, 0, 1], ranks, blurred(images, 2.0), 4
    )
    result = deletion_insertion(
        model,
        images,
        torch.tensor([1, 0, 1]),
        maps,
        grid_size=(3, 3),
        baseline="blur",
        batch_size=7,
    )
    torch.testing.assert_close(result.deletion, expected_del)
    torch.testing.assert_close(result.insertion, expected_ins)
    # The first deletion point is the clean image, the last insertion point too.
    clean = torch.softmax(model(images), -1)[[0, 1, 2], [1, 0, 1]]
    torch.testing.assert_close(result.deletion[:, 0], clean)
    torch.testing.assert_close(result.insertion[:, -1], clean)


def test_predicted_class_and_grid_from_a_timm_model():
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        depth=1,
        num_classes=5,
        embed_dim=24,
        num_heads=2,
    ).eval()
    images = torch.randn(2, 3, 32, 32)
    result = deletion_insertion(model, images, None, torch.rand(2, 4, 4), steps=4, baseline="zeros")
    with torch.no_grad():
        probs = torch.softmax(model(images), -1)
    assert result.targets.tolist() == probs.argmax(-1).tolist()
    torch.testing.assert_close(
        result.deletion[:, 0], probs.max(-1).values.double(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        result.insertion[:, -1], probs.max(-1).values.double(), rtol=1e-5, atol=1e-6
    )
    assert result.deletion.shape == (2, 5)


def test_bad_inputs_are_refused():
    model, image, grid_map = _hand_case()
    with pytest.raises(ValueError, match="do not split into a 3x3 patch grid"):
        deletion_insertion(model, image, 0, grid_map, grid_size=(3, 3))
    with pytest.raises(ValueError, match="grid_size"):
        deletion_insertion(lambda x: model(x), image, 0, grid_map)
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(model, image, 0, grid_map, grid_size=(2, 2), steps=5)
    with pytest.raises(ValueError, match="unknown baseline"):
        deletion_insertion(model, image, 0, grid_map, grid_size=(2, 2), baseline="noise")


class PixelLinear(nn.Module):
    """logit 0 = sum over pixels of v * (sum over channels), logit 1 = 0."""

    def __init__(self, v: torch.Tensor) -> None:
        super().__init__()
        self.v = v

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = (images.sum(1) * self.v).flatten(1).sum(1)
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def test_infidelity_is_zero_for_the_exact_linear_explanation():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(8, 8, generator=g, dtype=torch.float64)
    model = PixelLinear(v)
    images = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    seen = []

    def exact(x, targets):
        seen.append(targets.clone())
        return v.expand(x.shape[0], -1, -1)  # the model's gradient: input-independent

    def noisy(x, targets):
        return torch.rand(
            x.shape[0], 8, 8, generator=torch.Generator().manual_seed(5), dtype=x.dtype
        )

    good = captum_metrics(model, exact, images, [0, 0, 0], n_perturb_samples=4)
    bad = captum_metrics(model, noisy, images, [0, 0, 0], n_perturb_samples=4)
    assert good["infidelity"].shape == (3,) and good["sensitivity_max"].shape == (3,)
    assert good["infidelity"].abs().max() < 1e-10
    assert (bad["infidelity"] > 1e-3).all()
    assert good["sensitivity_max"].abs().max() == 0.0  # the explanation never changes
    assert all(bool((t == 0).all()) for t in seen)  # targets handed to explain


def test_sensitivity_of_an_input_dependent_explanation_is_bounded_and_seeded():
    g = torch.Generator().manual_seed(2)
    model = PixelLinear(torch.randn(8, 8, generator=g, dtype=torch.float64))
    images = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) + 1.0

    def brightness(x, targets):
        return x.sum(1)

    state = torch.get_rng_state()
    first = captum_metrics(
        model, brightness, images, torch.tensor([1, 0]), n_perturb_samples=5, perturb_radius=0.05
    )
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    again = captum_metrics(
        model, brightness, images, torch.tensor([1, 0]), n_perturb_samples=5, perturb_radius=0.05
    )
    torch.testing.assert_close(first["sensitivity_max"], again["sensitivity_max"])
    # ||sum_c delta_c|| / ||sum_c x_c|| with |delta| <= r per channel.
    bound = 3 * 0.05 * 8 / images.sum(1).flatten(1).norm(dim=1)
    sens = first["sensitivity_max"]
    assert (sens > 0).all() and (sens <= bound + 1e-12).all()


def test_explain_in_input_space_shapes():
    attribution = explain_in_input_space(lambda x, t: torch.ones(x.shape[0], 2, 2))
    out = attribution(torch.zeros(2, 3, 8, 8), target=1)
    assert out.shape == (2, 3, 8, 8) and torch.all(out == 1)
    out = attribution((torch.zeros(1, 3, 8, 8),), target=0)
    assert isinstance(out, tuple) and out[0].shape == (1, 3, 8, 8)
