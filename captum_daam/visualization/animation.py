"""The flow of one example as moving pictures: RGB stills, an animated GIF, an MP4."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
from torch import Tensor

from ..result import DAAMFlow
from .frames import blend, display_frames, to_display_image
from .style import FlowStyle, PathLike


def flow_stills(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    index: int = 0,
    *,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    style: Optional[FlowStyle] = None,
    **options: object,
) -> List[np.ndarray]:
    """The accumulated flow of one example as RGB frames, one per block: the image with
    ``D_b`` blended over it.

    Args:
        image: The preprocessed input image (3, H, W).
        flow: ``DAAM.attribute(..., return_flow=True)``.
        index: Which example of the flow.
        mean, std: The model's normalisation, to show the image in its colours.
        style: How to draw the maps (``mapping``, ``cmap``, ``alpha``, ``scale``).
        **options: Fields of :class:`FlowStyle` replacing the style's.

    Returns:
        One (H * scale, W * scale, 3) uint8 array per block.

    Example:
        >>> stills = flow_stills(images[0], flow, scale=2)
    """
    style = FlowStyle.resolve(style, **options)
    picture = to_display_image(image, mean, std)
    frames = display_frames(flow, index, style.mapping, "accumulated", picture.shape[:2])
    stills = []
    for frame in frames:
        pixels = (blend(picture, frame, style) * 255).astype(np.uint8)
        if style.scale > 1:
            pixels = pixels.repeat(style.scale, axis=0).repeat(style.scale, axis=1)
        stills.append(pixels)
    return stills


def flow_gif(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    path: PathLike,
    index: int = 0,
    *,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    style: Optional[FlowStyle] = None,
    **options: object,
) -> Path:
    """Write the accumulated flow of one example as an animated GIF: the frames of
    :func:`flow_stills`, ``frame_ms`` each, the last one held four times as long.

    Args:
        image, flow, index, mean, std, style: As for :func:`flow_stills`
            (``frame_ms`` sets the speed).
        **options: Fields of :class:`FlowStyle` replacing the style's.
        path: Where to write the GIF.

    Returns:
        The path written.

    Example:
        >>> flow_gif(images[0], flow, "flow.gif", scale=4, frame_ms=300)
    """
    from PIL import Image

    style = FlowStyle.resolve(style, **options)
    stills = flow_stills(image, flow, index, mean=mean, std=std, style=style)
    images = [Image.fromarray(still) for still in stills]
    durations = [style.frame_ms] * (len(images) - 1) + [style.frame_ms * 4]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def flow_mp4(
    image: Union[Tensor, np.ndarray],
    flow: DAAMFlow,
    path: PathLike,
    index: int = 0,
    *,
    fps: Optional[float] = None,
    ffmpeg: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    style: Optional[FlowStyle] = None,
    **options: object,
) -> Path:
    """Write the accumulated flow of one example as an MP4 video (H.264, the frames of
    :func:`flow_stills`, the last one held longer) with the ``ffmpeg`` encoder.

    Args:
        image, flow, index, mean, std, style: As for :func:`flow_stills`.
        **options: Fields of :class:`FlowStyle` replacing the style's.
        path: Where to write the video.
        fps: Frames per second; default ``1000 / style.frame_ms`` (2.5).
        ffmpeg: The encoder's executable; default ``ffmpeg`` on the ``PATH``.

    Returns:
        The path written.

    Raises:
        RuntimeError: No encoder is installed (use :func:`flow_gif` then), or it failed.

    Example:
        >>> flow_mp4(images[0], flow, "flow.mp4", scale=4)
    """
    executable = ffmpeg or shutil.which("ffmpeg")
    if executable is None:
        raise RuntimeError(
            "no MP4 encoder: ffmpeg is not installed (e.g. apt-get install ffmpeg); "
            "flow_gif writes the flow without one"
        )
    style = FlowStyle.resolve(style, **options)
    stills = flow_stills(image, flow, index, mean=mean, std=std, style=style)
    stills += [stills[-1]] * 3  # hold the final map
    height, width = stills[0].shape[:2]
    pad_h, pad_w = height % 2, width % 2  # H.264 wants even sizes
    raw = b"".join(
        np.pad(s, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge").tobytes() for s in stills
    )
    path = Path(path)
    rate = fps if fps is not None else 1000 / style.frame_ms
    command = [
        executable,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width + pad_w}x{height + pad_h}",
        "-r",
        str(rate),
        "-i",
        "-",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(path),
    ]
    result = subprocess.run(command, input=raw, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {result.stderr.decode(errors='replace').strip()}")
    return path
