"""``DAAMFlow.contributions`` from its definition, on hand-built flows.

The contributions are what ``summary.json``, the flow figure's bars and the viewer show:
block ``b``'s share of the final map's mass, ``sum(L_b) / sum(D_B)`` with
``D_B = L_1 + ... + L_B``; a row of zeros where the final map has no mass. Every expected
value here is worked out by hand or with a plain Python loop, never with the method.
"""

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_daam import DAAMFlow


def flow_of(block_maps) -> DAAMFlow:
    """A DAAMFlow built directly from block maps (N, blocks, rows, cols)."""
    maps = torch.as_tensor(block_maps, dtype=torch.float32)
    count, blocks = maps.shape[:2]
    return DAAMFlow(
        block_maps=maps,
        accumulated=maps.cumsum(dim=1),
        targets=torch.zeros(count, dtype=torch.long),
        scores=torch.ones(count),
        token_relevance=torch.zeros(count, blocks, 1 + maps.shape[-2] * maps.shape[-1]),
        layer_names=tuple(f"blocks.{b}.attn" for b in range(blocks)),
        num_prefix_tokens=1,
        token_index=0,
        input_size=(4 * maps.shape[-2], 4 * maps.shape[-1]),
        queries="readout",
    )


def by_hand(block_maps) -> list:
    """The definition, one example at a time in float64 Python arithmetic."""
    rows = []
    for example in np.asarray(block_maps, dtype=np.float64):
        masses = [float(sum(sum(row) for row in block)) for block in example]
        total = sum(masses)
        rows.append([m / total if total > 0 else 0.0 for m in masses])
    return rows


def test_three_blocks_worked_by_hand():
    # masses 2, 3 and 5 (total 10): shares 0.2, 0.3 and 0.5.
    flow = flow_of([[[[1, 0], [0, 1]], [[3, 0], [0, 0]], [[1, 1], [1, 2]]]])
    torch.testing.assert_close(flow.contributions(), torch.tensor([[0.2, 0.3, 0.5]]))


def test_a_block_with_zero_mass_contributes_zero():
    # The middle block adds nothing: shares 1/4, 0 and 3/4.
    flow = flow_of([[[[0.5, 0.5]], [[0.0, 0.0]], [[1.0, 2.0]]]])
    torch.testing.assert_close(flow.contributions(), torch.tensor([[0.25, 0.0, 0.75]]))


def test_all_zero_flow_gives_a_row_of_zeros():
    contributions = flow_of(torch.zeros(2, 4, 3, 3)).contributions()
    assert contributions.shape == (2, 4)
    assert torch.equal(contributions, torch.zeros(2, 4))
    assert torch.isfinite(contributions).all()


def test_one_block_contributes_everything():
    torch.testing.assert_close(
        flow_of([[[[0.1, 0.3], [0.2, 0.4]]]]).contributions(), torch.ones(1, 1)
    )
    torch.testing.assert_close(flow_of(torch.zeros(1, 1, 2, 2)).contributions(), torch.zeros(1, 1))


def test_rows_are_per_example_and_do_not_mix():
    # Example 0: masses 1 and 3; example 1: all its mass in the first block; example 2:
    # no mass. Each row is its own example's shares, whatever the others hold.
    maps = torch.zeros(3, 2, 2, 2)
    maps[0, 0, 0, 0] = 1.0
    maps[0, 1] = 0.75
    maps[1, 0] = 100.0
    expected = torch.tensor([[0.25, 0.75], [1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(flow_of(maps).contributions(), expected)
    for i in range(3):
        torch.testing.assert_close(flow_of(maps[i : i + 1]).contributions(), expected[i : i + 1])


def test_the_final_map_is_the_sum_of_the_shares():
    # sum_b share_b * mass(D_B) = mass(D_B), and each share is mass(L_b) / mass(D_B).
    flow = flow_of([[[[1, 2]], [[0, 4]], [[3, 0]]]])
    final_mass = float(flow.final.sum())
    assert final_mass == 10.0
    masses = [3.0, 4.0, 3.0]
    for share, mass in zip(flow.contributions()[0].tolist(), masses, strict=True):
        assert math.isclose(share * final_mass, mass, rel_tol=1e-6)


def test_selected_and_concatenated_flows_keep_their_rows():
    maps = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    flow = flow_of(maps)
    expected = torch.tensor(by_hand(maps), dtype=torch.float32)
    torch.testing.assert_close(flow.select(1).contributions(), expected[1:])
    joined = DAAMFlow.cat([flow.select(1), flow.select(0)])
    torch.testing.assert_close(joined.contributions(), expected.flip(0))


@given(
    st.integers(1, 3),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 3),
    st.data(),
)
def test_contributions_match_the_definition(count, blocks, rows, cols, data):
    size = count * blocks * rows * cols
    values = data.draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(0.0009765625, 1024.0, width=32)),
            min_size=size,
            max_size=size,
        )
    )
    maps = np.asarray(values, dtype=np.float32).reshape(count, blocks, rows, cols)
    got = flow_of(maps).contributions()
    assert got.shape == (count, blocks)
    np.testing.assert_allclose(got.numpy(), np.asarray(by_hand(maps)), rtol=1e-5, atol=1e-6)


def test_a_tiny_but_positive_final_map_still_gives_shares_that_sum_to_one():
    # Two blocks of equal mass 1e-35 (a normal float32): shares 1/2 and 1/2.
    flow = flow_of(torch.full((1, 2, 1, 1), 1e-35))
    torch.testing.assert_close(flow.contributions(), torch.tensor([[0.5, 0.5]]))
