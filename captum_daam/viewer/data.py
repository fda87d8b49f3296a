"""What the viewer page shows, as JSON-ready data: images and map frames as data URLs."""

from __future__ import annotations

import base64
import io
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from torch import Tensor

from ..errors import InvalidInputError, InvalidInputTypeError
from ..result import DAAMFlow
from ..visualization import (
    FRAME_FORMATS,
    FlowStyle,
    class_label,
    colour_frame,
    display_frames,
    to_display_image,
)

#: One flow, or several over the same images (one per class to switch between).
Flows = Union[DAAMFlow, Sequence[DAAMFlow]]


def _data_url(pixels: np.ndarray, image_format: str, quality: int) -> str:
    from PIL import Image

    pil_format, mime = FRAME_FORMATS[image_format]
    buffer = io.BytesIO()
    options = {"quality": quality} if pil_format == "JPEG" else {"optimize": True}
    Image.fromarray(pixels).save(buffer, pil_format, **options)
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _as_uint8(array: np.ndarray) -> np.ndarray:
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _flow_list(flows: Flows, count: int) -> List[DAAMFlow]:
    """The flows as a list, checked to cover the same ``count`` images and blocks."""
    flow_list = [flows] if isinstance(flows, DAAMFlow) else list(flows)
    if not flow_list:
        raise InvalidInputError("no flows to show: pass a DAAMFlow or a list of them")
    strangers = sorted({type(f).__name__ for f in flow_list if not isinstance(f, DAAMFlow)})
    if strangers:
        raise InvalidInputTypeError(
            f"flows must be DAAMFlow results (DAAM(...).attribute(..., return_flow=True)), "
            f"got {', '.join(strangers)}"
        )
    first = flow_list[0]
    for flow in flow_list:
        if flow.block_maps.shape[0] != count:
            raise InvalidInputError(
                f"a flow explains {flow.block_maps.shape[0]} images but {count} images "
                "were given; every flow must cover the same images"
            )
        if flow.num_blocks != first.num_blocks or flow.layer_names != first.layer_names:
            raise InvalidInputError("every flow must come from the same explainer (same blocks)")
    return flow_list


def viewer_data(
    images: Tensor,
    flows: Flows,
    class_names: Optional[Sequence[str]] = None,
    image_names: Optional[Sequence[str]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    *,
    style: Optional[FlowStyle] = None,
    **options: object,
) -> Dict[str, object]:
    """Everything the viewer page shows, as JSON-ready data (frames as data URLs).

    Args:
        images, flows, class_names, image_names, mean, std, style: As for
            :func:`~captum_daam.viewer.write_flow_viewer` (of the style, ``mapping``,
            ``cmap``, ``image_format`` and ``quality`` are used here).
        **options: Fields of :class:`~captum_daam.visualization.FlowStyle` replacing
            the style's.

    Returns:
        A dict with ``blocks``, ``layer_names``, ``mapping`` and ``images``: per image
        its ``name``, ``src`` (the image) and ``classes``, per class ``target``,
        ``label``, ``score``, ``contributions`` (each block's share of the final map)
        and the frames ``accumulated`` and ``block_maps`` (one data URL per block).

    Example:
        >>> data = viewer_data(images, flows, image_format="png")
        >>> data["images"][0]["classes"][0]["accumulated"][-1]  # the final map
    """
    if not isinstance(images, Tensor) or images.is_complex():
        kind = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise InvalidInputTypeError(f"expected images as a real tensor (N, C, H, W), got {kind}")
    if images.dim() != 4:
        raise InvalidInputError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    count = int(images.shape[0])
    flow_list = _flow_list(flows, count)
    style = FlowStyle.resolve(style, **options)
    if image_names is not None and len(image_names) != count:
        raise InvalidInputError(f"{len(image_names)} image names for {count} images")
    entries: List[Dict[str, object]] = []
    for i in range(count):
        picture = to_display_image(images[i], mean, std)
        classes = []
        for flow in flow_list:
            target = int(flow.targets[i])
            frames = {
                which: [
                    _data_url(
                        _as_uint8(colour_frame(frame, style.cmap)),
                        style.image_format,
                        style.quality,
                    )
                    for frame in display_frames(flow, i, style.mapping, which, picture.shape[:2])
                ]
                for which in ("accumulated", "block_maps")
            }
            classes.append(
                {
                    "target": target,
                    "label": class_label(target, class_names),
                    "score": float(flow.scores[i]),
                    "contributions": [float(c) for c in flow.contributions()[i]],
                    **frames,
                }
            )
        entries.append(
            {
                "name": str(image_names[i]) if image_names is not None else f"image {i}",
                "src": _data_url(_as_uint8(picture), "png", style.quality),
                "classes": classes,
            }
        )
    first = flow_list[0]
    return {
        "blocks": first.num_blocks,
        "layer_names": list(first.layer_names),
        "mapping": style.mapping,
        "images": entries,
    }
