"""From a result to what is shown: display images, display frames, coloured blends."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
from torch import Tensor

from ..display import upsample
from ..errors import InvalidInputError
from ..result import DAAMFlow
from .style import MAPPINGS, FlowStyle, check_mapping


def to_display_image(
    image: Union[Tensor, np.ndarray],
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """An (H, W, 3) float array in [0, 1] from a (3, H, W) tensor or an (H, W, 3) array.

    ``mean``/``std`` undo the model's normalisation (e.g. ``timm.data.resolve_data_config``
    values); without them the image is min-max scaled.
    """
    array = image.detach().cpu().float().numpy() if isinstance(image, Tensor) else image
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3:
        raise InvalidInputError(f"expected one image (3, H, W) or (H, W, 3), got {array.shape}")
    if array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if mean is not None and std is not None:
        array = array * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    else:
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.clip(array, 0.0, 1.0)


def display_frames(
    flow: DAAMFlow,
    index: int = 0,
    mapping: str = "sigmoid",
    which: str = "accumulated",
    size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Display frames (blocks, H, W) in [0, 1] of one example, upsampled to the input.

    Args:
        flow: ``DAAM.attribute(..., return_flow=True)``.
        index: Which example of the flow.
        mapping: A display mapping of :data:`MAPPINGS` (``"sigmoid"`` or ``"linear"``).
        which: ``"accumulated"`` (the maps ``D_b``) or ``"block_maps"`` (``L_b``).
        size: (H, W) to upsample to; default the flow's input size.

    Returns:
        The frames as a float array.

    Example:
        >>> frames = display_frames(flow, 0, "linear", "block_maps")
    """
    check_mapping(mapping)
    stacks = {"accumulated": flow.accumulated, "block_maps": flow.block_maps}
    if which not in stacks:
        raise InvalidInputError(f"which must be one of {sorted(stacks)}, got {which!r}")
    maps = stacks[which][index : index + 1].float()
    frames = MAPPINGS[mapping](upsample(maps, size or flow.input_size))
    return frames[0].cpu().numpy()


def colour_frame(frame: np.ndarray, cmap: str) -> np.ndarray:
    """One display frame (H, W) in [0, 1] through a matplotlib colour map: (H, W, 3)."""
    from matplotlib import colormaps

    return colormaps[cmap](frame)[..., :3]


def blend(image: np.ndarray, frame: np.ndarray, style: FlowStyle) -> np.ndarray:
    """A display frame (H, W) coloured with ``style.cmap`` over an (H, W, 3) image in
    [0, 1], with opacity ``style.alpha``."""
    heat = colour_frame(frame, style.cmap)
    return np.clip((1 - style.alpha) * image + style.alpha * heat, 0.0, 1.0)
