"""Token sequences and the patch grid: prefix tokens first, then the patches row-major."""

from __future__ import annotations

from typing import Tuple

from torch import Tensor

from ..errors import InvalidInputError


def patches_on_grid(values: Tensor, num_prefix_tokens: int, grid_size: Tuple[int, int]) -> Tensor:
    """The patch tokens of the last dimension of ``values`` laid out on the patch grid.

    Args:
        values: (..., tokens): one value per token, the ``num_prefix_tokens`` prefix
            tokens (class, distillation, registers) first, then the patches row-major.
        num_prefix_tokens: Tokens before the patches.
        grid_size: The patch grid (rows, cols).

    Returns:
        (..., rows, cols), a view of ``values`` where possible.

    Raises:
        ValueError: when the tokens do not add up to the prefix and the grid.
    """
    rows, cols = int(grid_size[0]), int(grid_size[1])
    tokens = int(values.shape[-1])
    expected = num_prefix_tokens + rows * cols
    if tokens != expected:
        raise InvalidInputError(
            f"{tokens} tokens do not match {num_prefix_tokens} prefix tokens and a "
            f"{rows}x{cols} patch grid ({expected} tokens)"
        )
    return values[..., num_prefix_tokens:].reshape(*values.shape[:-1], rows, cols)
