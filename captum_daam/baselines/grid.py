"""A token sequence seen as a feature map on the patch grid, and back."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .._core.grid import patches_on_grid
from ..errors import InvalidInputError


def tokens_to_grid(tokens: Tensor, num_prefix_tokens: int, grid_size: Tuple[int, int]) -> Tensor:
    """The patch tokens of a token sequence as a feature map on the patch grid.

    Args:
        tokens: A token sequence (N, prefix + rows * cols, D), patches row-major after
            the prefix tokens (class, distillation, registers), as timm ViTs hold them.
        num_prefix_tokens: Tokens before the patches (``adapter.num_prefix_tokens``).
        grid_size: The patch grid (rows, cols) (``adapter.grid_size((H, W))``).

    Returns:
        (N, D, rows, cols): channels first, like a convolutional feature map. A view of
        ``tokens`` where possible, so gradients flow back to the tokens.

    Raises:
        ValueError: when ``tokens`` is not (N, tokens, D), or its tokens do not add up
            to the prefix and the grid.

    Example::

        >>> import torch
        >>> from captum_daam import tokens_to_grid
        >>> tokens = torch.randn(2, 1 + 14 * 14, 192)      # DeiT-Tiny, 224 px
        >>> tokens_to_grid(tokens, 1, (14, 14)).shape       # channels first
        torch.Size([2, 192, 14, 14])
    """
    if tokens.dim() != 3:
        raise InvalidInputError(f"expected tokens (N, tokens, D), got shape {tuple(tokens.shape)}")
    return patches_on_grid(tokens.transpose(1, 2), num_prefix_tokens, grid_size)


def grid_to_tokens(grid: Tensor, prefix: Tensor) -> Tensor:
    """Inverse of :func:`tokens_to_grid`.

    Args:
        grid: Patch features (N, D, rows, cols).
        prefix: The prefix tokens (N, P, D).

    Returns:
        The token sequence (N, P + rows * cols, D), prefix first, patches row-major.

    Example::

        >>> import torch
        >>> from captum_daam import grid_to_tokens, tokens_to_grid
        >>> tokens = torch.randn(2, 1 + 14 * 14, 192)
        >>> grid = tokens_to_grid(tokens, 1, (14, 14))
        >>> torch.equal(grid_to_tokens(grid, tokens[:, :1]), tokens)
        True
    """
    patches = grid.flatten(2).transpose(1, 2)
    return torch.cat([prefix, patches], dim=1)


__all__ = ["grid_to_tokens", "tokens_to_grid"]
