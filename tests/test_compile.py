"""Compiled models are explained as their eager models: equal maps, nothing compiled,
the model (and its compiled call) left as found."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from captum_daam import DAAM, MemoryBank, SelfSupervisedDAAM
from captum_daam.adapters import eager_model, get_adapter, unwrap_model
from families import build
from model_state import assert_unchanged, snapshot


@pytest.fixture
def no_compilation():
    """Fails the test if dynamo traced anything while it ran."""
    counters.clear()
    yield
    traced = {name: dict(values) for name, values in counters.items() if values}
    assert not traced, f"the explanation compiled: {traced}"


def _images(batch=2, seed=0):
    return torch.randn(
        batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _data_parallel(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no GPU: DataParallel warns and runs the module
        return nn.DataParallel(module)


@pytest.mark.parametrize("queries", ["readout", "all"])
def test_compiled_model_gives_the_eager_maps(queries, no_compilation):
    model = build("deit")
    images = _images()
    expected = DAAM(model, queries=queries).attribute(images, target=[1, 4], return_flow=True)
    before = snapshot(model)
    got = DAAM(torch.compile(model), queries=queries).attribute(
        images, target=[1, 4], return_flow=True
    )
    torch.testing.assert_close(got.accumulated, expected.accumulated)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: torch.compile(m),
        lambda m: _data_parallel(torch.compile(m)),
        lambda m: torch.compile(_data_parallel(m)),
    ],
    ids=["compiled", "dp-of-compiled", "compiled-dp"],
)
def test_wrappers_are_seen_through(wrap, no_compilation):
    model = build("deit")
    wrapped = wrap(model)
    assert unwrap_model(wrapped) is model
    assert get_adapter(wrapped).model is model
    assert unwrap_model(eager_model(wrapped)) is model
    images = _images(3, seed=1)
    torch.testing.assert_close(DAAM(wrapped).attribute(images), DAAM(model).attribute(images))


def test_eager_model_keeps_uncompiled_wrappers():
    model = build("deit")
    wrapped = _data_parallel(model)
    assert eager_model(model) is model
    assert eager_model(wrapped) is wrapped
    rebuilt = eager_model(_data_parallel(torch.compile(model)))
    assert isinstance(rebuilt, nn.DataParallel) and rebuilt.module is model


def test_compiled_self_supervised(no_compilation):
    model = build("dino")
    generator = torch.Generator().manual_seed(3)
    bank = MemoryBank(
        torch.randn(12, model.embed_dim, generator=generator, dtype=torch.float64),
        torch.arange(12) % 3,
    )
    images = _images()
    before = snapshot(model)
    got = SelfSupervisedDAAM(torch.compile(model), bank, k=3).attribute(images)
    torch.testing.assert_close(got, SelfSupervisedDAAM(model, bank, k=3).attribute(images))
    assert_unchanged(model, before)


def test_model_compiled_in_place(no_compilation):
    """``model.compile()`` compiles ``__call__`` in place; the explanation runs the
    eager call (the hooks fire: equal maps) and puts the compiled call back."""
    model = copy.deepcopy(build("deit"))  # build() caches its models
    images = _images()
    expected = DAAM(model).attribute(images, return_flow=True)
    model.compile()
    model.blocks[1].compile()
    compiled = (model._compiled_call_impl, model.blocks[1]._compiled_call_impl)
    before = snapshot(model)
    got = DAAM(model).attribute(images, return_flow=True)
    torch.testing.assert_close(got.accumulated, expected.accumulated)
    assert (model._compiled_call_impl, model.blocks[1]._compiled_call_impl) == compiled
    assert all(
        m.__dict__.get("_compiled_call_impl") is None
        for name, m in model.named_modules()
        if name not in ("", "blocks.1")
    )
    assert_unchanged(model, before)


def test_compiled_call_is_put_back_after_an_error():
    model = copy.deepcopy(build("deit"))
    model.compile()
    compiled = model._compiled_call_impl
    with pytest.raises(ValueError):
        DAAM(model).attribute(_images(), target=[1, 2, 3])  # three targets, two images
    assert model._compiled_call_impl is compiled
