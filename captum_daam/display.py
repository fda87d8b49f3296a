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
    """
    flow = _check_flow(flow)
    return _min_max(flow, (1, 2, 3))


def sigmoid_mapping(flow: Tensor, gain: float = 5.0) -> Tensor:
    """The paper's sigmoid mapping: ``sigmoid(gain * D_b / max D_B) - 0.5``, then
    min-max per frame.

    ``D_B`` is the last map of the flow. Early, faint blocks become visible while the
    ordering within each frame is kept.
    """
    flow = _check_flow(flow)
    peak = flow[:, -1:].amax(dim=(-2, -1), keepdim=True).clamp(min=1e-30)
    squashed = torch.sigmoid(gain * flow / peak) - 0.5
    return _min_max(squashed, (2, 3))


def upsample(
    maps: Tensor, size: Union[int, Tuple[int, int]], mode: str = "bilinear"
) -> Tensor:
    """Upsample maps (N, C, rows, cols) to ``size`` with Captum's
    ``LayerAttribution.interpolate`` (as for LayerGradCam)."""
    maps = check_maps(maps)
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise InvalidInputError(f"size must be (height, width) of at least 1, got {size}")
    return LayerAttribution.interpolate(maps, tuple(size), interpolate_mode=mode)
