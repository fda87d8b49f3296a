"""Pictures of a DAAM result: overlays, the attention-flow figure, the flow as a GIF.

Views take results (:class:`~captum_daam.DAAMFlow`) and images, never models. Figures are
returned (matplotlib ``Figure``) and written only where a path is given.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch import Tensor

from .display import linear_mapping, sigmoid_mapping, upsample
from .result import DAAMFlow

#: The display mappings by name: ``"sigmoid"`` (the paper's default for flows),
#: ``"linear"`` (one scale for the whole flow).
MAPPINGS: Dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": sigmoid_mapping,
    "linear": linear_mapping,
}

PathLike = Union[str, Path]


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
        raise ValueError(f"expected one image (3, H, W) or (H, W, 3), got {array.shape}")
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
    flow: DAAMFlow, index: int = 0, mapping: str = "sigmoid", which: str = "accumulated",
    size: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Display frames (blocks, H, W) in [0, 1] of one example, upsampled to the input."""
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {sorted(MAPPINGS)}")
    maps = {"accumulated": flow.accumulated, "block_maps": flow.block_maps}[which]
    maps = maps[index : index + 1].float()
    frames = MAPPINGS[mapping](upsample(maps, size or flow.input_size))
    return frames[0].cpu().numpy()


def _blend(image: np.ndarray, frame: np.ndarray, alpha: float, cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    heat = colormaps[cmap](frame)[..., :3]
    return np.clip((1 - alpha) * image + alpha * heat, 0.0, 1.0)


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
    """
    from captum.attr import visualization as viz

    picture = to_display_image(image, mean, std)
    grid = attribution.detach().float().reshape(1, 1, *attribution.shape[-2:])
    heat = upsample(grid.cpu(), picture.shape[:2])[0].permute(1, 2, 0).numpy()
    figure, _ = viz.visualize_image_attr(
        heat, picture, method="blended_heat_map", sign="positive", show_colorbar=True,
        title=title, use_pyplot=False,
    )
    if path is not None:
        figure.savefig(path, bbox_inches="tight", dpi=100)
    return figure


def flow_figure(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    index: int = 0,
    mapping: str = "sigmoid",
    show_block_maps: bool = True,
    class_names: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    alpha: float = 0.55,
    cmap: str = "jet",
    path: Optional[PathLike] = None,
):
    """The attention-flow figure of one example.

    Top row: the image, then the accumulated maps ``D_1 … D_B`` over it; optionally a
    second row with each block's own map ``L_b``; last, a bar chart of each block's
    contribution to the final map (share of its mass).

    Args:
        image: The preprocessed input image (3, H, W).
        flow: ``DAAM.attribute(..., return_flow=True)``.
        index: Which example of the flow.
        mapping: ``"sigmoid"`` (the paper's mapping, per frame) or ``"linear"`` (one
            scale for the flow).
        show_block_maps: Add the row of per-block maps ``L_b``.
        class_names: Names of the classes, to title the figure (e.g.
            :func:`imagenet_class_names` for ImageNet classifiers).
        mean, std: The model's normalisation, to show the image in its colours.
        alpha, cmap: Opacity and colour map of the overlays.
        path: Where to save the figure (optional).

    Returns:
        The matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    picture = to_display_image(image, mean, std)
    size = picture.shape[:2]
    accumulated = display_frames(flow, index, mapping, "accumulated", size)
    rows = [("D", accumulated)]
    if show_block_maps:
        rows.append(("L", display_frames(flow, index, mapping, "block_maps", size)))
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
            axis.imshow(_blend(picture, frames[b], alpha, cmap))
            axis.set_title(f"${symbol}_{{{b + 1}}}$", fontsize=8)
            axis.axis("off")
    bars = figure.add_subplot(grid[len(rows), 1:])
    shares = flow.contributions()[index].float().cpu().numpy()
    bars.bar(np.arange(1, blocks + 1), shares, color="tab:blue")
    bars.set_xticks(np.arange(1, blocks + 1))
    bars.set_xlabel("block", fontsize=8)
    bars.set_ylabel("share of final map", fontsize=8)
    bars.tick_params(labelsize=7)
    target = int(flow.targets[index])
    name = class_names[target] if class_names is not None else f"class {target}"
    figure.suptitle(f"DAAM flow: {name} (score {float(flow.scores[index]):.2f})", fontsize=10)
    if path is not None:
        figure.savefig(path, bbox_inches="tight", dpi=100)
    return figure


def flow_stills(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    index: int = 0,
    mapping: str = "sigmoid",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    alpha: float = 0.55,
    cmap: str = "jet",
    scale: int = 1,
) -> List[np.ndarray]:
    """The accumulated flow of one example as RGB frames (H*scale, W*scale, 3) uint8,
    one per block: the image with ``D_b`` blended over it."""
    picture = to_display_image(image, mean, std)
    frames = display_frames(flow, index, mapping, "accumulated", picture.shape[:2])
    stills = []
    for frame in frames:
        pixels = (_blend(picture, frame, alpha, cmap) * 255).astype(np.uint8)
        if scale > 1:
            pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
        stills.append(pixels)
    return stills


def flow_gif(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    path: PathLike,
    index: int = 0,
    frame_ms: int = 400,
    **style: object,
) -> Path:
    """Write the accumulated flow of one example as an animated GIF (one frame per block,
    the last frame held longer). ``style``: the keyword arguments of
    :func:`flow_stills` (mapping, mean, std, alpha, cmap, scale). Returns the path."""
    from PIL import Image

    images = [Image.fromarray(still) for still in flow_stills(image, flow, index, **style)]
    durations = [frame_ms] * (len(images) - 1) + [frame_ms * 4]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def flow_mp4(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    path: PathLike,
    index: int = 0,
    fps: float = 2.5,
    ffmpeg: Optional[str] = None,
    **style: object,
) -> Path:
    """Write the accumulated flow of one example as an MP4 video (H.264, one frame per
    block, the last one held longer) with the ``ffmpeg`` encoder.

    Raises ``RuntimeError`` naming the fix when no encoder is installed (use
    :func:`flow_gif` then). ``style``: the keyword arguments of :func:`flow_stills`.
    """
    executable = ffmpeg or shutil.which("ffmpeg")
    if executable is None:
        raise RuntimeError(
            "no MP4 encoder: ffmpeg is not installed (e.g. apt-get install ffmpeg); "
            "flow_gif writes the flow without one"
        )
    stills = flow_stills(image, flow, index, **style)
    stills += [stills[-1]] * 3  # hold the final map
    height, width = stills[0].shape[:2]
    pad_h, pad_w = height % 2, width % 2  # H.264 wants even sizes
    raw = b"".join(
        np.pad(s, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge").tobytes() for s in stills
    )
    path = Path(path)
    command = [
        executable, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width + pad_w}x{height + pad_h}", "-r", str(fps), "-i", "-",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path),
    ]
    result = subprocess.run(command, input=raw, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {result.stderr.decode(errors='replace').strip()}")
    return path


def imagenet_class_names() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions from timm (offline)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(info.num_classes()))


def class_names_for(num_classes: int) -> Optional[Tuple[str, ...]]:
    """ImageNet names for a 1000-class model, else ``None``."""
    return imagenet_class_names() if num_classes == 1000 else None


__all__ = [
    "MAPPINGS",
    "class_names_for",
    "display_frames",
    "flow_figure",
    "flow_gif",
    "flow_mp4",
    "flow_stills",
    "imagenet_class_names",
    "overlay",
    "to_display_image",
]

