"""How a flow is drawn: :class:`FlowStyle`, the display mappings and frame encodings.

One frozen dataclass holds every display option of the figures, the GIF / MP4 and the
flow viewer, so each option is written once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

from torch import Tensor

from ..display import linear_mapping, sigmoid_mapping
from ..errors import InvalidInputError, InvalidInputTypeError

#: The display mappings by name: ``"sigmoid"`` (the paper's default for flows),
#: ``"linear"`` (one scale for the whole flow).
MAPPINGS: Dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": sigmoid_mapping,
    "linear": linear_mapping,
}

#: Encodings of the viewer's map frames: name -> (PIL format, MIME type).
FRAME_FORMATS: Dict[str, Tuple[str, str]] = {
    "png": ("PNG", "image/png"),
    "jpeg": ("JPEG", "image/jpeg"),
}

#: Where a picture is written.
PathLike = Union[str, Path]


def check_mapping(mapping: str) -> None:
    """Raise ``ValueError`` naming the choices unless ``mapping`` is in :data:`MAPPINGS`."""
    if mapping not in MAPPINGS:
        raise InvalidInputError(f"unknown mapping {mapping!r}; choose one of {sorted(MAPPINGS)}")


@dataclass(frozen=True)
class FlowStyle:
    """How a flow is drawn, in the figures, the GIF / MP4 and the flow viewer.

    Every function that draws a flow takes ``style=`` and, for convenience, any of these
    fields as keyword arguments, which replace the style's (``flow_gif(..., scale=4)``).

    Args:
        mapping: Display mapping of the maps: ``"sigmoid"`` (the paper's, per frame) or
            ``"linear"`` (one scale for the whole flow); see :data:`MAPPINGS`.
        cmap: Matplotlib colour map of the maps.
        alpha: Opacity of the maps over the image, in [0, 1] (the viewer's initial
            opacity).
        frame_ms: Time per block of the GIF, of the MP4 (``fps = 1000 / frame_ms``) and
            of the viewer's Play button, in milliseconds.
        scale: Whole-pixel enlargement of the GIF / MP4 frames.
        image_format: Encoding of the viewer's map frames: ``"jpeg"`` (small) or
            ``"png"`` (lossless, larger pages); the images themselves are always PNG.
        quality: JPEG quality of the viewer's map frames, 1 to 100.
        display_size: Width and height of each image on the viewer page, in CSS pixels.

    Example:
        >>> style = FlowStyle(mapping="linear", cmap="viridis")
        >>> flow_figure(image, flow, style=style)
        >>> write_flow_viewer("flow.html", images, flows, style=style)
    """

    mapping: str = "sigmoid"
    cmap: str = "jet"
    alpha: float = 0.55
    frame_ms: int = 400
    scale: int = 1
    image_format: str = "jpeg"
    quality: int = 90
    display_size: int = 256

    def __post_init__(self) -> None:
        check_mapping(self.mapping)
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidInputError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.image_format not in FRAME_FORMATS:
            raise InvalidInputError(
                f"image_format must be one of {sorted(FRAME_FORMATS)}, got {self.image_format!r}"
            )
        for name, low, high in (
            ("frame_ms", 1, None),
            ("scale", 1, None),
            ("quality", 1, 100),
            ("display_size", 1, None),
        ):
            value = getattr(self, name)
            if value < low or (high is not None and value > high):
                bound = f"lie in [{low}, {high}]" if high is not None else f"be at least {low}"
                raise InvalidInputError(f"{name} must {bound}, got {value}")

    @classmethod
    def resolve(cls, style: Optional["FlowStyle"] = None, **options: Any) -> "FlowStyle":
        """``style`` (default: ``FlowStyle()``) with the fields named in ``options``
        replaced.

        Args:
            style: The style to start from.
            **options: Fields of :class:`FlowStyle` to replace.

        Returns:
            The style to draw with.

        Raises:
            TypeError: ``style`` is no :class:`FlowStyle`, or an option is no field of it.

        Example:
            >>> FlowStyle.resolve(None, alpha=0.3).alpha
            0.3
        """
        known = [field.name for field in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InvalidInputTypeError(
                f"unknown display option(s) {unknown}; the options of FlowStyle are {known}"
            )
        if style is None:
            style = cls()
        elif not isinstance(style, FlowStyle):
            raise InvalidInputTypeError(
                f"style must be a FlowStyle, got {type(style).__name__}; e.g. "
                "style=FlowStyle(mapping='linear'), or pass the options as keywords"
            )
        return replace(style, **options) if options else style

    @classmethod
    def split(cls, arguments: Dict[str, object]) -> Tuple["FlowStyle", Dict[str, object]]:
        """Keyword arguments split into the style they set and the others.

        Args:
            arguments: Keyword arguments, among them perhaps ``style`` and fields of
                :class:`FlowStyle`.

        Returns:
            ``(style, rest)``: :meth:`resolve` of ``style`` and the fields given, and
            the arguments that are neither.

        Example:
            >>> FlowStyle.split({"alpha": 0.3, "title": "T"})
            (FlowStyle(..., alpha=0.3, ...), {'title': 'T'})
        """
        names = {field.name for field in fields(cls)}
        options = {name: value for name, value in arguments.items() if name in names}
        rest = {
            name: value
            for name, value in arguments.items()
            if name not in names and name != "style"
        }
        return cls.resolve(arguments.get("style"), **options), rest  # type: ignore[arg-type]
