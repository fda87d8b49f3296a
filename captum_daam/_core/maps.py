"""From channel importance and token relevance to per-block and accumulated maps."""

from __future__ import annotations

from typing import Tuple

from torch import Tensor

from .grid import patches_on_grid


def channel_weights(grad_row: Tensor, signed: bool = False) -> Tensor:
    """Channel weights from ``C = d score / d Z[readout]``, (batch, channels).

    Supervised DAAM keeps the positive part, ``ReLU(C)``; the self-supervised variant
    uses the gradient signed.
    """
    return grad_row if signed else grad_row.clamp(min=0)


def block_maps(relevance: Tensor, num_prefix_tokens: int, grid_size: Tuple[int, int]) -> Tensor:
    """``L_b = ReLU(relevance of the patch tokens)`` on the patch grid.

    Args:
        relevance: Signed token relevance, (batch, blocks, tokens), prefix tokens first.
        num_prefix_tokens: Class, distillation and register tokens before the patches.
        grid_size: Patch grid (rows, columns), row-major token order.

    Returns:
        (batch, blocks, rows, columns), non-negative.
    """
    return patches_on_grid(relevance, num_prefix_tokens, grid_size).clamp(min=0)


def accumulate(maps: Tensor) -> Tensor:
    """``D_b = L_1 + ... + L_b``, accumulated from the input side over dim 1."""
    return maps.cumsum(dim=1)


def spread_to_grid(maps: Tensor, grid_size: Tuple[int, int]) -> Tensor:
    """Relevance on a coarser grid spread evenly onto the patch grid, mass preserved.

    A hierarchical model's later stages (Swin after patch merging) have one token per
    ``f x f`` patches; each token's relevance is shared equally among the patches it
    covers (cells of a padded border that fall outside the grid are dropped).

    Args:
        maps: (batch, rows_b, cols_b), with ``rows_b = ceil(rows / f)`` for an integer
            factor ``f`` (likewise for the columns).
        grid_size: The patch grid (rows, cols).

    Returns:
        (batch, rows, cols).
    """
    rows, cols = grid_size
    coarse_rows, coarse_cols = int(maps.shape[-2]), int(maps.shape[-1])
    if (coarse_rows, coarse_cols) == (rows, cols):
        return maps
    factor_r = -(-rows // coarse_rows)
    factor_c = -(-cols // coarse_cols)
    if -(-rows // factor_r) != coarse_rows or -(-cols // factor_c) != coarse_cols:
        raise RuntimeError(
            f"a {coarse_rows}x{coarse_cols} token grid does not tile the {rows}x{cols} "
            "patch grid; the adapter for this model is wrong"
        )
    spread = maps.repeat_interleave(factor_r, dim=-2).repeat_interleave(factor_c, dim=-1)
    return spread[..., :rows, :cols] / (factor_r * factor_c)
