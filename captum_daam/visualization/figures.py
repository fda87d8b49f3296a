"""Figures of a result: one map over its image, the attention-flow figure."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from torch import Tensor

from ..display import upsample
from ..result import DAAMFlow
from .class_names import class_label
from .frames import blend, display_frames, to_display_image
from .style import FlowStyle, PathLike


def _save(figure, path: Optional[PathLike]):
    if path is not None:
        figure.savefig(path, bbox_inches="tight", dpi=100)
    return figure


def overlay(
    image: Union[Tensor, np.ndarray],
    attribution: Tensor,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    title: Optional[str] = None,
    path: Optional[PathLike] = None,
):
    """One map over its image with Captum's ``visualize_image_attr`` (blended heat map).

    Args:
        image: The preprocessed image (3, H, W) (or an (H, W, 3) array in [0, 1]).
        attribution: A map (1, h, w) or (h, w), e.g. ``flow.final[i]``; upsampled to
            the image.
        mean, std: The model's normalisation, to show the image in its colours.
        title: Figure title.
        path: Where to save the figure (optional).

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> overlay(images[0], flow.final[0], mean=mean, std=std, path="map.png")
    """
    from captum.attr import visualization as viz

    picture = to_display_image(image, mean, std)
    grid = attribution.detach().float().reshape(1, 1, *attribution.shape[-2:])
    heat = upsample(grid.cpu(), picture.shape[:2])[0].permute(1, 2, 0).numpy()
    figure, _ = viz.visualize_image_attr(
        heat, picture, method="blended_heat_map", sign="positive", show_colorbar=True,
        title=title, use_pyplot=False,
    )
    return _save(figure, path)


def flow_figure(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    index: int = 0,
    *,
    show_block_maps: bool = True,
    class_names: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    path: Optional[PathLike] = None,
    style: Optional[FlowStyle] = None,
    **options: object,
):
    """The attention-flow figure of one example.

    Top row: the image, then the accumulated maps ``D_1 … D_B`` over it; optionally a
    second row with each block's own map ``L_b``; last, a bar chart of each block's
    contribution to the final map (share of its mass).

    Args:
        image: The preprocessed input image (3, H, W).
        flow: ``DAAM.attribute(..., return_flow=True)``.
        index: Which example of the flow.
        show_block_maps: Add the row of per-block maps ``L_b``.
        class_names: Names of the classes, to title the figure (e.g.
            :func:`imagenet_class_names` for ImageNet classifiers).
        mean, std: The model's normalisation, to show the image in its colours.
        path: Where to save the figure (optional).
        style: How to draw the maps (``mapping``, ``cmap``, ``alpha`` are used).
        **options: Fields of :class:`FlowStyle` replacing the style's.

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> flow_figure(images[0], flow, mapping="linear", path="flow.png")
    """
    from matplotlib.figure import Figure

    style = FlowStyle.resolve(style, **options)
    picture = to_display_image(image, mean, std)
    size = picture.shape[:2]
    rows = [("D", display_frames(flow, index, style.mapping, "accumulated", size))]
    if show_block_maps:
        rows.append(("L", display_frames(flow, index, style.mapping, "block_maps", size)))
    blocks = flow.num_blocks
    columns = blocks + 1
    figure = Figure(figsize=(1.6 * columns, 1.7 * (len(rows) + 1)))
    grid = figure.add_gridspec(len(rows) + 1, columns, height_ratios=[1] * len(rows) + [0.8])
    for r, (symbol, frames) in enumerate(rows):
        axis = figure.add_subplot(grid[r, 0])
        axis.imshow(picture)
        axis.set_title("input" if r == 0 else "", fontsize=8)
        axis.axis("off")
        for b in range(blocks):
            axis = figure.add_subplot(grid[r, b + 1])
            axis.imshow(blend(picture, frames[b], style))
            axis.set_title(f"${symbol}_{{{b + 1}}}$", fontsize=8)
            axis.axis("off")
    bars = figure.add_subplot(grid[len(rows), 1:])
    shares = flow.contributions()[index].float().cpu().numpy()
    bars.bar(np.arange(1, blocks + 1), shares, color="tab:blue")
    bars.set_xticks(np.arange(1, blocks + 1))
    bars.set_xlabel("block", fontsize=8)
    bars.set_ylabel("share of final map", fontsize=8)
    bars.tick_params(labelsize=7)
    name = class_label(int(flow.targets[index]), class_names)
    figure.suptitle(f"DAAM flow: {name} (score {float(flow.scores[index]):.2f})", fontsize=10)
    return _save(figure, path)
