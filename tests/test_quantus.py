"""DAAM for Quantus: ``captum_daam.quantus.explain_func`` under Quantus's contract.

Quantus's metrics call ``explain_func(model=..., inputs=x_batch, targets=y_batch,
**explain_func_kwargs)`` with numpy batches and want numpy attributions back. Two metrics
run for real (skipped when Quantus is not installed); the function itself is checked
against the public explainers it wraps, value for value, without Quantus.
"""

import copy
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_daam import (
    DAAM,
    DAAMInput,
    InvalidInputError,
    InvalidInputTypeError,
    MemoryBank,
    SelfSupervisedDAAM,
    to_input_space,
)
from captum_daam.quantus import METHODS, explain_func
from captum_daam.zoo import load_default_model
from families import build
from model_state import assert_unchanged, snapshot

SIZE = 64  # the embedded model's images


@pytest.fixture(scope="module")
def model():
    return load_default_model()


def _images(count: int, seed: int) -> torch.Tensor:
    return torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _bank(dim: int = 96) -> MemoryBank:
    generator = torch.Generator().manual_seed(5)
    return MemoryBank(torch.randn(24, dim, generator=generator), torch.arange(24) % 3)


def test_two_quantus_metrics_run_through_explain_func(model):
    quantus = pytest.importorskip(
        "quantus", reason="Quantus is not installed: pip install 'captum-daam[quantus]'"
    )
    images = _images(4, seed=0)
    with torch.no_grad():
        labels = model(images).argmax(dim=1).numpy()
    x_batch = images.numpy()
    before = snapshot(model)
    faithfulness = quantus.FaithfulnessCorrelation(
        nr_runs=10,
        subset_size=64,
        perturb_baseline="black",
        disable_warnings=True,
        display_progressbar=False,
    )
    sparseness = quantus.Sparseness(disable_warnings=True, display_progressbar=False)
    calls = []

    def recorded(**kwargs):
        calls.append((kwargs, explain_func(**kwargs)))
        return calls[-1][1]

    for metric in (faithfulness, sparseness):
        scores = metric(
            model=model,
            x_batch=x_batch,
            y_batch=labels,
            device="cpu",
            explain_func=recorded,
            explain_func_kwargs={"method": "daam", "interpolate_mode": "bilinear"},
        )
        assert len(scores) >= 1 and np.isfinite(np.asarray(scores, dtype=float)).all()
    assert_unchanged(model, before)
    assert len(calls) >= 2
    # What the metrics explained is DAAMInput's attribution, value for value.
    explainer = DAAMInput(model, interpolate_mode="bilinear")
    for kwargs, attributions in calls:
        assert kwargs["device"] == "cpu" and kwargs["method"] == "daam"
        inputs = torch.as_tensor(kwargs["inputs"], dtype=torch.float32)
        expected = explainer.attribute(inputs, target=torch.as_tensor(kwargs["targets"]))
        assert isinstance(attributions, np.ndarray)
        assert attributions.shape == (len(inputs), 1, SIZE, SIZE)
        for channel in range(3):
            np.testing.assert_array_equal(attributions[:, 0], expected[:, channel].numpy())
        assert attributions.max() > 0


@settings(max_examples=12)
@given(
    count=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["bilinear", "nearest", "bicubic", "area"]),
    layer=st.sampled_from([None, -1, 0, [1, 3]]),
    float64=st.booleans(),
    tensor=st.booleans(),
)
def test_daam_equals_daam_input(model, count, seed, mode, layer, float64, tensor):
    images = _images(count, seed)
    targets = np.arange(count) % 6
    modules = None
    if layer is not None:
        sites = DAAM(model).sites
        picked = [layer] if isinstance(layer, int) else layer
        modules = [sites[i].module for i in picked]
    inputs = images.double() if float64 else images
    got = explain_func(
        model, inputs if tensor else inputs.numpy(), targets, layer=layer, interpolate_mode=mode
    )
    expected = DAAMInput(model, modules, interpolate_mode=mode).attribute(
        images, target=targets.tolist()
    )
    np.testing.assert_array_equal(got[:, 0], expected[:, 0].numpy())


def test_all_queries_and_self_supervised_equal_their_explainers(model):
    images = _images(3, seed=1)
    targets = np.array([[2], [0], [1]])  # Quantus's (N, 1) labels
    got = explain_func(model, images.numpy(), targets, method="daam_all")
    maps = DAAM(model, queries="all").attribute(images, target=[2, 0, 1])
    np.testing.assert_array_equal(got, to_input_space(maps, images[:, :1]).numpy())

    bank = _bank()
    got = explain_func(
        model,
        images.numpy(),
        targets,
        method="self_supervised",
        memory_bank=bank,
        k=5,
        temperature=0.1,
        relu_weights=True,
    )
    maps = SelfSupervisedDAAM(model, bank, k=5, temperature=0.1, relu_weights=True).attribute(
        images, target=[2, 0, 1]
    )
    np.testing.assert_array_equal(got, to_input_space(maps, images[:, :1]).numpy())
    voted = explain_func(
        model,
        images.numpy(),
        targets,
        method="self_supervised",
        memory_bank=bank,
        explain_predicted=True,
    )
    maps = SelfSupervisedDAAM(model, bank).attribute(images)
    np.testing.assert_array_equal(voted, to_input_space(maps, images[:, :1]).numpy())


def test_targets_token_and_layout(model):
    images = _images(2, seed=2)
    with torch.no_grad():
        predicted = model(images).argmax(dim=1).numpy()
    wrong = (predicted + 1) % 6
    as_predicted = explain_func(model, images.numpy(), wrong, explain_predicted=True)
    np.testing.assert_array_equal(as_predicted, explain_func(model, images, predicted))
    np.testing.assert_array_equal(as_predicted, explain_func(model, images, None))
    channel_last = explain_func(
        model, images.permute(0, 2, 3, 1).numpy(), predicted, channel_first=False
    )
    np.testing.assert_array_equal(channel_last, as_predicted.transpose(0, 2, 3, 1))
    distilled = build("deit_distilled", torch.float32)
    small = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    got = explain_func(distilled, small.numpy(), np.array([1, 4]), token="dist")
    expected = DAAMInput(distilled).attribute(small, target=[1, 4], token="dist")
    np.testing.assert_array_equal(got[:, 0], expected[:, 0].numpy())


def test_model_left_exactly_as_found(model):
    train_mode = copy.deepcopy(build("vit", torch.float32))  # build() is cached: a copy
    train_mode.train()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    for method, extra in (
        ("daam", {}),
        ("daam_all", {}),
        ("self_supervised", {"memory_bank": _bank(48)}),
    ):
        before = snapshot(train_mode)
        with pytest.warns(UserWarning, match="training mode"):
            out = explain_func(
                train_mode, images.numpy(), np.array([1, 2]), method=method, device="cpu", **extra
            )
        assert np.isfinite(out).all()
        assert_unchanged(train_mode, before)
    assert train_mode.training


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(method="gradcam"), InvalidInputError, "method must be one of"),
        (dict(interpolate_mode="linear"), InvalidInputError, "interpolate_mode must be one of"),
        (dict(querie="all"), InvalidInputTypeError, "unknown option"),
        (dict(method="self_supervised"), InvalidInputError, "needs a memory bank"),
        (dict(k=5), InvalidInputError, "only apply to method='self_supervised'"),
        (dict(method="daam_all", queries="readout"), InvalidInputError, "queries='all'"),
        (dict(device="cuda:0"), InvalidInputError, "model.to('cuda:0')"),
        (dict(device="gpu"), InvalidInputError, "not a torch device"),
        (dict(layer=4), InvalidInputError, "layer index 4 out of range"),
        (dict(layer=[0, "last"]), InvalidInputTypeError, "integer indices"),
        (dict(targets=np.array([0.0, 1.0])), InvalidInputTypeError, "astype(int)"),
        (dict(inputs=[[0.0]]), InvalidInputTypeError, "numpy array or a torch tensor"),
        (
            dict(inputs=np.zeros((3, SIZE, SIZE), dtype=np.float32)),
            InvalidInputError,
            "channel_first=False",
        ),
        (dict(inputs=np.array([["a"]])), InvalidInputTypeError, "numeric array"),
    ],
)
def test_bad_options_are_refused_by_name(model, kwargs, error, words):
    call = dict(model=model, inputs=_images(2, seed=6).numpy(), targets=np.array([0, 1]))
    call.update(kwargs)
    before = snapshot(model)
    with pytest.raises(error, match=re.escape(words)):
        explain_func(**call)
    assert_unchanged(model, before)


def test_methods_are_named():
    assert METHODS == ("daam", "daam_all", "self_supervised")
