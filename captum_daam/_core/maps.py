"""From channel importance and token relevance to per-block and accumulated maps."""

from __future__ import annotations

from typing import Tuple

from torch import Tensor


def channel_weights(grad_row: Tensor, signed: bool = False) -> Tensor:
    """Channel weights from ``C = d score / d Z[readout]``, (batch, channels).

    Supervised DAAM keeps the positive part, ``ReLU(C)``; the self-supervised variant
    uses the gradient signed.
    """
    return grad_row if signed else grad_row.clamp(min=0)


def block_maps(
    relevance: Tensor, num_prefix_tokens: int, grid_size: Tuple[int, int]
) -> Tensor:
    """``L_b = ReLU(relevance of the patch tokens)`` on the patch grid.

    Args:
        relevance: Signed token relevance, (batch, blocks, tokens), prefix tokens first.
        num_prefix_tokens: Class, distillation and register tokens before the patches.
        grid_size: Patch grid (rows, columns), row-major token order.

    Returns:
        (batch, blocks, rows, columns), non-negative.
    """
    batch, blocks, tokens = relevance.shape
    rows, cols = grid_size
    patches = relevance[:, :, num_prefix_tokens:]
    if patches.shape[-1] != rows * cols:
        raise RuntimeError(
            f"the model has {tokens} tokens, {num_prefix_tokens} prefix tokens and a "
            f"{rows}x{cols} patch grid, which do not add up; the adapter for this model "
            "is wrong"
        )
    return patches.clamp(min=0).reshape(batch, blocks, rows, cols)


def accumulate(maps: Tensor) -> Tensor:
    """``D_b = L_1 + ... + L_b``, accumulated from the input side over dim 1."""
    return maps.cumsum(dim=1)
