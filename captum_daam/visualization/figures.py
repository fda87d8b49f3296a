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
        heat,
        picture,
        method="blended_heat_map",
        sign="positive",
        show_colorbar=True,
        title=title,
        use_pyplot=False,
    )
    return _save(figure, path)


#: The caption under every flow figure: what the two rows of maps are.
FLOW_CAPTION = (
    r"$D_b = L_1 + \dots + L_b$: the map accumulated from the input up to block $b$"
    r" ($D_B$ is DAAM's final map);  $L_b$: block $b$'s own map"
)

#: The colour bar's label for each display mapping.
MAPPING_LABELS = {
    "sigmoid": "sigmoid-mapped value\n(0 to 1 per map)",
    "linear": "linearly mapped value\n(one scale per flow)",
}


def flow_title(flow: DAAMFlow, index: int, class_names: Optional[Sequence[str]]) -> str:
    """The flow figure's title: the explained class and its score, named for what it is
    (the class logit for :class:`~captum_daam.DAAM`, ``<w, f>`` for the self-supervised
    variant)."""
    from ..self_supervised import SelfSupervisedFlow

    name = class_label(int(flow.targets[index]), class_names)
    score = float(flow.scores[index])
    if isinstance(flow, SelfSupervisedFlow):
        return f"Self-supervised DAAM flow: {name} (score <w, f> {score:.2f})"
    return f"DAAM flow: {name} (logit {score:.2f})"


def _colour_bar(figure, grid, map_rows: int, image_axis, style: FlowStyle) -> None:
    """A horizontal colour bar of the maps under the input image: in the free cell of
    the second row, or (one row of maps) just under the image, above the bar chart."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if map_rows > 1:
        axis = figure.add_subplot(grid[1, 0].subgridspec(3, 1, height_ratios=[1, 1, 4])[1])
    else:
        axis = image_axis.inset_axes([0.0, -0.22, 1.0, 0.1])
    colours = ScalarMappable(Normalize(0.0, 1.0), colormaps[style.cmap])
    bar = figure.colorbar(colours, cax=axis, orientation="horizontal", ticks=[0, 0.5, 1])
    bar.ax.tick_params(labelsize=6)
    bar.set_label(MAPPING_LABELS.get(style.mapping, style.mapping), fontsize=7)


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

    Top row: the input image, then the accumulated maps ``D_1 … D_B`` over it; optionally
    a second row with each block's own map ``L_b``, the colour bar of the maps under the
    input; last, a bar chart of each block's contribution to the final map (share of its
    mass). The title names the class and its score (the logit for
    :class:`~captum_daam.DAAM`, ``<w, f>`` for
    :class:`~captum_daam.SelfSupervisedDAAM`); a caption says what ``D_b`` and ``L_b``
    are.

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
    figure = Figure(figsize=(max(1.6 * columns, 7.0), 1.7 * (len(rows) + 1)))
    grid = figure.add_gridspec(
        len(rows) + 1,
        columns,
        height_ratios=[1] * len(rows) + [0.8],
        hspace=0.3 if show_block_maps else 0.9,
    )  # room for the bar
    shown = figure.add_subplot(grid[0, 0])  # the input, once
    shown.imshow(picture)
    shown.set_title("input", fontsize=8)
    shown.axis("off")
    for r, (symbol, frames) in enumerate(rows):
        for b in range(blocks):
            axis = figure.add_subplot(grid[r, b + 1])
            axis.imshow(blend(picture, frames[b], style))
            axis.set_title(f"${symbol}_{{{b + 1}}}$", fontsize=8)
            axis.axis("off")
    _colour_bar(figure, grid, len(rows), shown, style)
    bars = figure.add_subplot(grid[len(rows), 1:])
    shares = flow.contributions()[index].float().cpu().numpy()
    bars.bar(np.arange(1, blocks + 1), shares, color="tab:blue")
    bars.set_xticks(np.arange(1, blocks + 1))
    bars.set_xlabel("block $b$", fontsize=8)
    bars.set_ylabel("share of final map", fontsize=8)
    bars.tick_params(labelsize=7)
    figure.suptitle(flow_title(flow, index, class_names), fontsize=10)
    figure.text(0.5, 0.0, FLOW_CAPTION, ha="center", va="top", fontsize=7)
    return _save(figure, path)
