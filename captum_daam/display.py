"""The paper's display mappings and upsampling to the input size.

Both mappings take a flow of maps (N, blocks, rows, cols), e.g. ``DAAMFlow.accumulated``,
and return values in [0, 1] of the same shape.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
from captum.attr import LayerAttribution
from torch import Tensor


def _min_max(x: Tensor, dims: Tuple[int, ...]) -> Tensor:
    low = x.amin(dim=dims, keepdim=True)
    span = x.amax(dim=dims, keepdim=True) - low
    return torch.where(span > 0, (x - low) / span.clamp(min=1e-30), torch.zeros_like(x))


def _check_flow(flow: Tensor) -> None:
    if flow.dim() != 4:
        raise ValueError(
            f"expected a flow of maps (N, blocks, rows, cols), got shape {tuple(flow.shape)}"
        )


def linear_mapping(flow: Tensor) -> Tensor:
    """Global linear min-max over the whole flow of each example.

    One scale for all blocks of an example, so growth of the accumulated map shows.
    """
    _check_flow(flow)
    return _min_max(flow, (1, 2, 3))


def sigmoid_mapping(flow: Tensor, gain: float = 5.0) -> Tensor:
    """The paper's sigmoid mapping: ``sigmoid(gain * D_b / max D_B) - 0.5``, then
    min-max per frame.

    ``D_B`` is the last map of the flow. Early, faint blocks become visible while the
    ordering within each frame is kept.
    """
    _check_flow(flow)
    peak = flow[:, -1:].amax(dim=(-2, -1), keepdim=True).clamp(min=1e-30)
    squashed = torch.sigmoid(gain * flow / peak) - 0.5
    return _min_max(squashed, (2, 3))


def upsample(
    maps: Tensor, size: Union[int, Tuple[int, int]], mode: str = "bilinear"
) -> Tensor:
    """Upsample maps (N, C, rows, cols) to ``size`` with Captum's
    ``LayerAttribution.interpolate`` (as for LayerGradCam)."""
    if maps.dim() != 4:
        raise ValueError(f"expected maps (N, C, rows, cols), got shape {tuple(maps.shape)}")
    if isinstance(size, int):
        size = (size, size)
    return LayerAttribution.interpolate(maps, tuple(size), interpolate_mode=mode)
