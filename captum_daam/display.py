"""The paper's display mappings and upsampling to the input size.

Both mappings take a flow of maps (N, blocks, rows, cols), e.g. ``DAAMFlow.accumulated``,
and return values in [0, 1] of the same shape.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
from captum.attr import LayerAttribution
from torch import Tensor

from .errors import InvalidInputError, InvalidInputTypeError


def _min_max(x: Tensor, dims: Tuple[int, ...]) -> Tensor:
    low = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - low
    return torch.where(span > 0, (x - low) / span.clamp(min=1e-30), torch.zeros_like(x))


def check_maps(maps: object, what: str = "maps (N, C, rows, cols)") -> Tensor:
    """Refuse anything but a real-valued 4-D tensor of maps with at least one row and
    column, naming the problem; return ``maps`` (integer maps as float32).

    Args:
        maps: The maps to check.
        what: How the maps are called in the message, with their expected shape.

    Raises:
        InvalidInputTypeError: not a tensor, or complex / boolean values.
        InvalidInputError: not 4-D, or no rows or columns.
    """
    if not isinstance(maps, Tensor):
        raise InvalidInputTypeError(f"expected {what} as a tensor, got {type(maps).__name__}")
    if maps.is_complex() or maps.dtype == torch.bool:
        raise InvalidInputTypeError(
            f"{what} have dtype {maps.dtype}; pass real-valued maps (e.g. maps.float())"
        )
    if maps.dim() != 4 or maps.shape[-2] == 0 or maps.shape[-1] == 0:
        raise InvalidInputError(f"expected {what}, got shape {tuple(maps.shape)}")
    return maps if maps.is_floating_point() else maps.float()


def _check_flow(flow: Tensor) -> Tensor:
    return check_maps(flow, "a flow of maps (N, blocks, rows, cols)")


def linear_mapping(flow: Tensor) -> Tensor:
    """Global linear min-max over the whole flow of each example.

    One scale for all blocks of an example, so growth of the accumulated map shows.

    Args:
        flow: Maps (N, blocks, rows, cols), e.g. ``DAAMFlow.accumulated``.

    Returns:
        The maps in [0, 1], same shape; an example whose maps are all equal gives zeros.

    Example::

        >>> import torch
        >>> from captum_daam import linear_mapping
        >>> flow = torch.tensor([[[[0.0, 1.0, 2.0]], [[2.0, 3.0, 4.0]]]])  # 2 blocks
        >>> linear_mapping(flow).flatten().tolist()    # one scale for both blocks
        [0.0, 0.25, 0.5, 0.5, 0.75, 1.0]
    """
    flow = _check_flow(flow)
    return _min_max(flow, (1, 2, 3))


def sigmoid_mapping(flow: Tensor, gain: float = 5.0) -> Tensor:
    """The paper's sigmoid mapping: ``sigmoid(gain * D_b / max D_B) - 0.5``, then
    min-max per frame.

    ``D_B`` is the last map of the flow. Early, faint blocks become visible while the
    ordering within each frame is kept.

    Args:
        flow: Maps (N, blocks, rows, cols), e.g. ``DAAMFlow.accumulated``.
        gain: Steepness of the sigmoid (5, the paper's value).

    Returns:
        The maps in [0, 1], same shape, each frame spanning [0, 1] unless constant.

    Example::

        >>> import torch
        >>> from captum_daam import sigmoid_mapping
        >>> flow = torch.tensor([[[[0.0, 1.0, 2.0]], [[2.0, 3.0, 4.0]]]])  # 2 blocks
        >>> sigmoid_mapping(flow).flatten(1).round(decimals=2)   # each frame on its own
        tensor([[0.0000, 0.6500, 1.0000, 0.0000, 0.7600, 1.0000]])
    """
    flow = _check_flow(flow)
    peak = flow[:, -1:].amax(dim=(-2, -1), keepdim=True).clamp(min=1e-30)
    squashed = torch.sigmoid(gain * flow / peak) - 0.5
    return _min_max(squashed, (2, 3))


def upsample(maps: Tensor, size: Union[int, Tuple[int, int]], mode: str = "bilinear") -> Tensor:
    """Upsample maps (N, C, rows, cols) to ``size`` with Captum's
    ``LayerAttribution.interpolate`` (as for LayerGradCam).

    The default mode here is ``"bilinear"`` (smooth maps, as in the paper's figures),
    unlike ``LayerAttribution.interpolate``, whose default is ``"nearest"``; pass
    ``mode="nearest"`` for Captum's blocky maps.

    Args:
        maps: Maps (N, C, rows, cols), e.g. ``DAAM.attribute``'s output.
        size: The output (height, width), or one int for a square.
        mode: The interpolation mode handed to ``LayerAttribution.interpolate``:
            ``"bilinear"``, ``"nearest"``, ``"bicubic"`` or ``"area"``.

    Returns:
        The maps (N, C, height, width).

    Example::

        >>> import torch
        >>> from captum_daam import upsample
        >>> maps = torch.rand(2, 1, 14, 14)             # DAAM on a 224 px DeiT
        >>> upsample(maps, 224).shape
        torch.Size([2, 1, 224, 224])
        >>> upsample(maps, (224, 112), mode="nearest").shape
        torch.Size([2, 1, 224, 112])
    """
    maps = check_maps(maps)
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise InvalidInputError(f"size must be (height, width) of at least 1, got {size}")
    return LayerAttribution.interpolate(maps, tuple(size), interpolate_mode=mode)
