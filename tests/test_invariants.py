"""Invariants of DAAM that hold whatever the weights: batching, completeness,
monotonicity, and a model left exactly as it was."""

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from captum_daam import DAAM
from captum_daam._core.capture import record_attention
from captum_daam._core.decomposition import decompose, token_relevance
from captum_daam.adapters import get_adapter
from families import FAMILIES, attention_modules, build
from model_state import assert_unchanged, snapshot
from reference import reference_daam


def images_for(name, batch=3, seed=0, dtype=torch.float32):
    size = FAMILIES[name].sizes[-1]
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed)).to(dtype)


@given(name=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 2**31 - 1))
def test_batch_equals_per_example(name, seed):
    model = build(name, torch.float32)
    images = images_for(name, batch=4, seed=seed)
    daam = DAAM(model)
    batched = daam.attribute(images, return_flow=True)
    for i in range(images.shape[0]):
        single = daam.attribute(images[i : i + 1], return_flow=True)
        assert single.targets[0] == batched.targets[i]
        scale = single.token_relevance.abs().max()
        torch.testing.assert_close(
            batched.token_relevance[i : i + 1],
            single.token_relevance,
            rtol=1e-4,
            atol=1e-5 * scale,
        )


@given(name=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 2**31 - 1))
def test_decomposition_is_complete(name, seed):
    """Summed over all tokens, the decomposition from the model's own hooks is the
    class-token row of the attention output before the projection."""
    model = build(name)
    images = images_for(name, seed=seed, dtype=torch.float64)
    adapter = get_adapter(model)
    z_rows = []
    handles = [
        site.z_module.register_forward_pre_hook(lambda m, args: z_rows.append(args[0][:, 0]))
        for site in adapter.sites
    ]
    try:
        with torch.no_grad(), record_attention(adapter.sites, token_index=0) as recorder:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    for (a0, v), z_row in zip(recorder.gather(), z_rows):
        torch.testing.assert_close(a0.sum(-1), torch.ones_like(a0[..., 0]))
        s = decompose(a0, v)
        torch.testing.assert_close(s.sum(1), z_row)
        weights = torch.randn_like(z_row)
        torch.testing.assert_close(
            token_relevance(a0, v, weights), torch.einsum("btc,bc->bt", s, weights)
        )


@given(name=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 2**31 - 1))
def test_relevance_sums_to_weighted_class_output(name, seed):
    """Before the ReLU, a block's map summed over all tokens (class token included)
    equals the weighted class-token attention output (explicit reference's Z and C)."""
    model = build(name)
    images = images_for(name, seed=seed, dtype=torch.float64)
    flow = DAAM(model).attribute(images, return_flow=True)
    ref = reference_daam(
        model, attention_modules(model), images, num_prefix_tokens=model.num_prefix_tokens
    )
    expected = (ref.weights * ref.z_rows).sum(-1)
    torch.testing.assert_close(flow.token_relevance.sum(-1), expected)


@given(name=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 2**31 - 1))
def test_accumulated_map_is_monotone_in_blocks(name, seed):
    flow = DAAM(build(name, torch.float32)).attribute(images_for(name, seed=seed), return_flow=True)
    assert torch.all(flow.block_maps >= 0)
    assert torch.all(flow.accumulated[:, 1:] >= flow.accumulated[:, :-1])
    torch.testing.assert_close(flow.accumulated[:, -1:], flow.final)
    has_mass = (flow.final.sum(dim=(1, 2, 3)) > 0).float()
    torch.testing.assert_close(flow.contributions().sum(1), has_mass)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_model_and_inputs_unchanged(name):
    model = build(name, torch.float32)
    images = images_for(name)
    before = snapshot(model)
    DAAM(model).attribute(images, return_flow=True)
    assert_unchanged(model, before)
    assert not images.requires_grad and images.grad is None

    grad_images = images.clone().requires_grad_()
    DAAM(model).attribute(grad_images)
    assert grad_images.requires_grad and grad_images.grad is None
    assert_unchanged(model, before)


def test_under_no_grad_and_frozen_parameters():
    model = build("dinov2", torch.float32)
    images = images_for("dinov2")
    expected = DAAM(model).attribute(images)
    with torch.no_grad():
        under_no_grad = DAAM(model).attribute(images)
    torch.testing.assert_close(under_no_grad, expected)

    frozen = [p.requires_grad_(False) for p in model.parameters()]
    try:
        before = snapshot(model)
        with torch.no_grad():
            torch.testing.assert_close(DAAM(model).attribute(images), expected)
        assert_unchanged(model, before)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def test_inference_tensors_are_accepted():
    model = build("vit", torch.float32)
    with torch.inference_mode():
        images = images_for("vit")
    torch.testing.assert_close(DAAM(model).attribute(images), DAAM(model).attribute(images.clone()))


def test_reduced_precision_is_close_to_float32():
    model32 = build("vit", torch.float32)
    model16 = build("vit", torch.bfloat16)
    images = images_for("vit", batch=2)
    flow32 = DAAM(model32).attribute(images, return_flow=True)
    flow16 = DAAM(model16).attribute(images.bfloat16(), target=flow32.targets, return_flow=True)
    assert flow16.final.dtype == torch.float32
    a, b = flow32.token_relevance.flatten(1), flow16.token_relevance.flatten(1)
    correlation = torch.nn.functional.cosine_similarity(
        a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    )
    assert torch.all(correlation > 0.95), correlation


def test_distillation_token_option():
    model = build("deit_distilled")
    images = images_for("deit_distilled", dtype=torch.float64)
    daam = DAAM(model)
    cls_flow = daam.attribute(images, return_flow=True)
    dist_flow = daam.attribute(images, return_flow=True, token="dist")
    assert cls_flow.token_index == 0 and dist_flow.token_index == 1
    assert torch.equal(cls_flow.targets, dist_flow.targets)
    assert not torch.allclose(cls_flow.token_relevance, dist_flow.token_relevance)


def test_training_mode_warns_and_is_kept():
    model = build("vit", torch.float32)
    model.train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            DAAM(model).attribute(images_for("vit"))
        assert model.training
    finally:
        model.eval()


def test_data_parallel_wrapper_is_unwrapped():
    model = build("vit", torch.float32)
    images = images_for("vit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = nn.DataParallel(model)
    torch.testing.assert_close(DAAM(wrapped).attribute(images), DAAM(model).attribute(images))
