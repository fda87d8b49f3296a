"""Model-randomisation sanity checks and the map similarity measures."""

import copy
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity

from captum_daam import DAAM
from captum_daam.evaluation import (
    hog_similarity,
    map_similarities,
    randomization_layers,
    randomization_test,
    randomize_layer,
    sanity_comparison_figure,
    sanity_figure,
    sanity_table_markdown,
    spearman,
    ssim,
)
from captum_daam.evaluation.similarity import channel_maps
from tests.families import build


def _daam(model):
    explainer = DAAM(model)
    return lambda images, targets: explainer.attribute(images, target=targets)[:, 0]


def _edges(model):
    """An explanation that ignores the model: gradient magnitude of the image."""

    def explain(images, targets):
        gray = images.mean(1)
        gy, gx = torch.gradient(gray, dim=(1, 2))
        return (gx**2 + gy**2).sqrt()

    return explain


@pytest.fixture(scope="module")
def setup():
    model = build("vit")  # depth 3, 32 px, 4x4 patches of 8 px, float64
    images = torch.randn(
        3, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    targets = torch.tensor([1, 4, 7])
    return model, images, targets


def _hooks(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_similarity_measures_match_scipy_and_skimage():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(3, 32, 32, generator=g, dtype=torch.float64)
    b = a + 0.3 * torch.rand(3, 32, 32, generator=g, dtype=torch.float64)
    b[2] = torch.round(b[2] * 3)  # ties
    for i in range(3):
        x, y = a[i].numpy(), b[i].numpy()
        assert spearman(a[i], b[i]) == pytest.approx(stats.spearmanr(x.ravel(), y.ravel())[0])
        unit = lambda m: (m - m.min()) / (m.max() - m.min())  # noqa: E731
        assert ssim(a[i], b[i]) == pytest.approx(
            structural_similarity(unit(x), unit(y), data_range=1.0)
        )
        hx, hy = hog(unit(x)), hog(unit(y))
        assert hog_similarity(a[i], b[i]) == pytest.approx(np.corrcoef(hx, hy)[0, 1])
    sims = map_similarities(a, b)
    assert list(sims) == ["spearman", "ssim", "hog"] and all(v.shape == (3,) for v in sims.values())
    # Rank correlation ignores increasing rescaling; identical maps are 1 everywhere.
    torch.testing.assert_close(spearman(a, torch.exp(3 * a)), torch.ones(3, dtype=torch.float64))
    for value in map_similarities(a, 2 * a + 1).values():
        torch.testing.assert_close(value, torch.ones(3, dtype=torch.float64))
    assert spearman(a[0], -a[0]) == pytest.approx(-1.0)
    assert math.isnan(spearman(a[0], torch.ones(32, 32)))


def test_similarity_errors():
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.rand(4, 4), torch.rand(5, 5))
    with pytest.raises(ValueError, match="upsample"):
        hog_similarity(torch.rand(8, 8), torch.rand(8, 8))
    with pytest.raises(ValueError, match="too small for SSIM"):
        ssim(torch.rand(2, 2), torch.rand(2, 2))
    with pytest.raises(ValueError, match="unknown similarity"):
        map_similarities(torch.rand(1, 8, 8), torch.rand(1, 8, 8), ["pearson"])


def test_default_layers_top_first(setup):
    model, _, _ = setup
    assert randomization_layers(model) == ["head", "blocks.2", "blocks.1", "blocks.0"]
    assert randomization_layers(torch.nn.DataParallel(model)) == [
        "head",
        "blocks.2",
        "blocks.1",
        "blocks.0",
    ]


def test_randomize_layer_follows_timm_init_and_is_seeded():
    model = copy.deepcopy(build("dinov2"))  # LayerScale with init_values 0.5
    block = model.blocks[1]
    state = torch.get_rng_state()
    randomize_layer(block, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    weight = block.mlp.fc1.weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert weight.abs().max().item() <= 2.0
    assert torch.all(block.mlp.fc1.bias == 0) and torch.all(block.attn.qkv.bias == 0)
    assert torch.all(block.norm1.weight == 1) and torch.all(block.norm1.bias == 0)
    assert torch.all(block.ls1.gamma == 0.5)
    again = copy.deepcopy(build("dinov2")).blocks[1]
    randomize_layer(again, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(block.parameters(), again.parameters()))
    randomize_layer(again, seed=8)
    assert not torch.equal(again.mlp.fc1.weight, block.mlp.fc1.weight)


def test_cascading_changes_daam_maps_and_leaves_the_model_alone(setup):
    model, images, targets = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = randomization_test(model, _daam, images, targets, mode="cascading")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert _hooks(model) == 0
    by = {(r["step"], r["metric"]): r for r in rows}
    assert sorted({r["layer"] for r in rows}) == sorted(
        ["original", "head", "blocks.2", "blocks.1", "blocks.0"]
    )
    for metric in ("spearman", "ssim", "hog"):
        assert by[(0, metric)]["mean"] == pytest.approx(1.0)  # the untouched copy
        assert by[(0, metric)]["count"] == 3
    # Once the head is random the class scores, hence the maps, change.
    for step in range(1, 5):
        assert by[(step, "ssim")]["mean"] < 0.9
    assert by[(4, "spearman")]["mean"] < 0.5


def test_an_explanation_that_ignores_the_model_stays_identical(setup):
    model, images, targets = setup
    for mode in ("cascading", "independent"):
        rows = randomization_test(model, _edges, images, targets, mode=mode)
        assert len(rows) == 5 * 3
        for row in rows:
            assert row["mean"] == pytest.approx(1.0, abs=1e-9) and row["std"] == pytest.approx(
                0.0, abs=1e-9
            )
            assert row["count"] == 3


def test_maps_with_and_without_the_channel_give_the_same_rows(setup):
    """(N, 1, h, w), the registry's shape, and (N, h, w) are one map to the harness."""
    model, images, targets = setup

    def with_channel(model_):
        explain = _daam(model_)
        return lambda images_, targets_: explain(images_, targets_)[:, None]

    flat = randomization_test(model, _daam, images, targets, layers=["head"])
    channel = randomization_test(model, with_channel, images, targets, layers=["head"])
    assert flat == channel
    assert channel_maps(torch.ones(2, 4, 4)).shape == (2, 1, 4, 4)
    with pytest.raises(
        ValueError, match=r"\(N, 1, h, w\) or \(N, h, w\), got shape \(3, 3, 4, 4\)"
    ):
        randomization_test(
            model, lambda m: lambda x, t: torch.ones(3, 3, 4, 4), images, targets, layers=["head"]
        )


def test_modes_randomise_the_right_layers_with_the_same_draws(setup):
    model, images, targets = setup
    layers = ["head", "blocks.2", "blocks.1"]
    seen = {}

    def probe(mode):
        def make(copy_):
            seen.setdefault(mode, []).append({k: v.clone() for k, v in copy_.state_dict().items()})
            return _edges(copy_)

        return make

    for mode in ("cascading", "independent"):
        randomization_test(model, probe(mode), images, targets, mode=mode, layers=layers, seed=3)
    original = model.state_dict()

    def changed(state):
        return sorted(
            {
                ".".join(k.split(".")[: 2 if k.startswith("blocks") else 1])
                for k, v in state.items()
                if not torch.equal(v, original[k])
            }
        )

    # [reference, step 0 copy, step 1, step 2, step 3]
    assert [changed(s) for s in seen["cascading"]] == [
        [],
        [],
        ["head"],
        ["blocks.2", "head"],
        ["blocks.1", "blocks.2", "head"],
    ]
    assert [changed(s) for s in seen["independent"]] == [
        [],
        [],
        ["head"],
        ["blocks.2"],
        ["blocks.1"],
    ]
    last_cascade, last_alone = seen["cascading"][-1], seen["independent"][-1]
    assert all(
        torch.equal(last_cascade[k], last_alone[k]) for k in last_alone if k.startswith("blocks.1.")
    )


def test_table_and_figure(setup, tmp_path):
    model, images, targets = setup
    rows = randomization_test(
        model,
        _daam,
        images,
        targets,
        mode="independent",
        layers=["head", "blocks.0"],
        metrics=("spearman", "ssim"),
    )
    table = sanity_table_markdown(rows).splitlines()
    assert table[0] == "| mode | step | layer | spearman | ssim |"
    assert len(table) == 2 + 3
    step1 = next(r for r in rows if r["step"] == 1 and r["metric"] == "ssim")
    assert table[3].startswith("| independent | 1 | head |")
    assert f"{step1['mean']:.3f} ± {step1['std']:.3f}" in table[3]
    path = tmp_path / "sanity.png"
    sanity_figure(rows, path, title="DAAM")
    with Image.open(path) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_comparison_figure_draws_one_line_per_method(setup, tmp_path):
    model, images, targets = setup
    rows = []
    for name, explainer in (("daam", _daam), ("edges", _edges)):
        rows += [
            dict(r, method=name)
            for r in randomization_test(
                model,
                explainer,
                images,
                targets,
                mode="cascading",
                layers=["head", "blocks.1"],
                metrics=("spearman", "ssim"),
            )
        ]
    figure = sanity_comparison_figure(rows, tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").stat().st_size > 0
    (axes,) = figure.axes
    lines = {
        line.get_label(): list(line.get_ydata())
        for line in axes.get_lines()
        if not line.get_label().startswith("_")
    }
    assert sorted(lines) == ["daam", "edges"]
    expected = [
        r["mean"]
        for r in sorted(rows, key=lambda r: r["step"])
        if r["method"] == "daam" and r["metric"] == "spearman"
    ]
    assert lines["daam"] == pytest.approx(expected)
    assert lines["edges"] == pytest.approx([1.0, 1.0, 1.0])  # ignores the weights
    with pytest.raises(ValueError, match="'method' key"):
        sanity_comparison_figure(
            [{k: v for k, v in r.items() if k != "method"} for r in rows], tmp_path / "x.png"
        )
    with pytest.raises(ValueError, match="no rows of metric 'hog'"):
        sanity_comparison_figure(rows, tmp_path / "x.png", metric="hog")


def test_bad_arguments(setup):
    model, images, targets = setup
    with pytest.raises(ValueError, match="mode must be one of"):
        randomization_test(model, _edges, images, targets, mode="top-down")
    with pytest.raises(ValueError, match="not modules"):
        randomization_test(model, _edges, images, targets, layers=["blocks.9"])
    with pytest.raises(ValueError, match="one target per image"):
        randomization_test(model, _edges, images, targets[:2])


def test_default_targets_are_the_trained_models_predictions(setup):
    model, images, _ = setup
    with torch.no_grad():
        predicted = model(images).argmax(-1)
    seen = []

    def make(copy_):
        def explain(x, targets):
            seen.append(targets.clone())
            return _edges(copy_)(x, targets)

        return explain

    randomization_test(
        model, make, images, None, layers=["head", "blocks.2"], metrics=("spearman",)
    )
    assert len(seen) == 4 and all(torch.equal(t, predicted) for t in seen)


def test_layers_of_a_class_attention_model():
    import timm

    cait = timm.create_model(
        "cait_xxs24_224",
        img_size=32,
        patch_size=8,
        embed_dim=48,
        depth=2,
        num_heads=3,
        num_classes=5,
    )
    assert randomization_layers(cait) == ["head", "blocks_token_only.1", "blocks_token_only.0"]
