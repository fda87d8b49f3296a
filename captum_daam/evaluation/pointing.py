"""The energy-based pointing game: how much of a map's mass lies inside the boxes."""

from __future__ import annotations

from torch import Tensor

from ..errors import InvalidInputError
from .similarity import channel_maps


def energy_in_boxes(maps: Tensor, masks: Tensor) -> Tensor:
    """Fraction of each map's (non-negative) mass inside its box mask.

    Args:
        maps: (N, 1, H, W) or (N, H, W) maps at the masks' resolution (upsample first).
        masks: (N, H, W) boolean masks of the ground-truth boxes.

    Returns:
        (N,) energies in [0, 1]; a uniform map scores the masks' area fraction. A map
        with no mass scores 0.
    """
    maps = channel_maps(maps, "maps at the masks' resolution")[:, 0]
    if not isinstance(masks, Tensor) or masks.dim() != 3 or maps.shape != masks.shape:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise InvalidInputError(
            f"expected one box mask (H, W) per map, masks {tuple(maps.shape)}; got {shape}"
        )
    maps = maps.clamp(min=0).to(masks.device)
    total = maps.sum(dim=(-2, -1))
    inside = (maps * masks).sum(dim=(-2, -1))
    return inside / total.clamp(min=1e-30) * (total > 0)
