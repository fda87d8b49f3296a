"""DAAM agrees with the explicit slow reference on every supported family."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from assertions import assert_close_scaled
from captum_daam import DAAM
from families import (
    FAMILIES,
    attention_modules,
    attribution_cases,
    build,
    random_images,
    token_index,
)
from reference import reference_daam


@st.composite
def cases(draw):
    name = draw(st.sampled_from(sorted(FAMILIES)))
    family = FAMILIES[name]
    return (name, *draw(attribution_cases(family.sizes, family.tokens)))


@given(cases())
def test_matches_explicit_reference(case):
    name, batch, size, token, targets, seed = case
    model = build(name)
    images = random_images(batch, size, seed)

    flow = DAAM(model).attribute(images, target=targets, return_flow=True, token=token)
    ref = reference_daam(
        model,
        attention_modules(model),
        images,
        targets,
        token_index=token_index(name, token),
        num_prefix_tokens=model.num_prefix_tokens,
        grid_size=flow.grid_size,
    )

    assert torch.equal(flow.targets, ref.targets)
    assert_close_scaled(flow.token_relevance, ref.token_relevance)
    assert_close_scaled(flow.block_maps, ref.block_maps)
    assert_close_scaled(flow.accumulated, ref.accumulated)
    torch.testing.assert_close(flow.scores, ref.logits.gather(1, ref.targets[:, None])[:, 0])
    assert flow.final.shape == (batch, 1, *flow.grid_size)
    assert flow.block_maps.shape[1] == len(model.blocks)
    # The explicit attention reproduces the model's own output.
    torch.testing.assert_close(ref.logits, model(images).detach())


@given(
    name=st.sampled_from(sorted(FAMILIES)),
    chosen=st.sets(st.integers(0, 2), min_size=1),
    seed=st.integers(0, 2**31 - 1),
)
def test_layer_subset_matches_reference_rows(name, chosen, seed):
    model = build(name)
    size = FAMILIES[name].sizes[0]
    images = random_images(2, size, seed)
    blocks = sorted(chosen)
    layers = [model.blocks[i].attn for i in reversed(blocks)]  # order must not matter
    flow = DAAM(model, layer=layers).attribute(images, return_flow=True)
    ref = reference_daam(
        model,
        attention_modules(model),
        images,
        num_prefix_tokens=model.num_prefix_tokens,
        grid_size=flow.grid_size,
    )
    assert flow.layer_names == tuple(f"blocks.{i}.attn" for i in blocks)
    assert_close_scaled(flow.block_maps, ref.block_maps[:, blocks])
    assert_close_scaled(flow.accumulated, ref.block_maps[:, blocks].cumsum(1))


def test_attention_mask_is_part_of_the_class_row():
    model = build("vit")
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    tokens = 1 + 16
    mask = torch.ones(tokens, tokens, dtype=torch.bool)
    mask[:, 3:9] = False  # no query may attend to patches 2..7
    flow = DAAM(model).attribute(images, additional_forward_args=(mask,), return_flow=True)
    assert torch.all(flow.token_relevance[:, :, 3:9] == 0)
    unmasked = DAAM(model).attribute(images, return_flow=True)
    assert not torch.allclose(flow.block_maps, unmasked.block_maps)
    # The maps explain the masked forward: its logits are the ones explained.
    logits = model(images, mask)
    torch.testing.assert_close(flow.scores, logits.gather(1, flow.targets[:, None])[:, 0])


@pytest.mark.parametrize("fused", [True, False])
def test_fused_and_explicit_attention_give_the_same_maps(fused):
    model = build("qk_norm")
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    before = [block.attn.fused_attn for block in model.blocks]
    try:
        for block in model.blocks:
            block.attn.fused_attn = fused
        flow = DAAM(model).attribute(images, return_flow=True)
    finally:
        for block, flag in zip(model.blocks, before):
            block.attn.fused_attn = flag
    ref = reference_daam(
        model, attention_modules(model), images, num_prefix_tokens=1, grid_size=flow.grid_size
    )
    assert_close_scaled(flow.token_relevance, ref.token_relevance)
