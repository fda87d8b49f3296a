"""Pictures of a DAAM result: overlays, the attention-flow figure, the flow as a GIF or MP4.

Views take results (:class:`~captum_daam.DAAMFlow`) and images, never models. Figures are
returned (matplotlib ``Figure``) and written only where a path is given. How a flow is
drawn (display mapping, colour map, opacity, speed, ...) is one :class:`FlowStyle`,
shared with the flow viewer (:mod:`captum_daam.viewer`); each drawing function also takes
its fields as keyword arguments:

    >>> from captum_daam.visualization import FlowStyle, flow_figure, flow_gif
    >>> style = FlowStyle(mapping="linear", alpha=0.4)
    >>> figure = flow_figure(images[0], flow, style=style, mean=mean, std=std)
    >>> flow_gif(images[0], flow, "flow.gif", style=style, scale=4)

Modules: ``style`` (:class:`FlowStyle`, the mappings), ``frames`` (display images and
frames), ``figures`` (overlay, flow figure), ``animation`` (stills, GIF, MP4),
``class_names``.
"""

from .animation import flow_gif, flow_mp4, flow_stills
from .class_names import class_label, class_names_for, imagenet_class_names
from .figures import flow_figure, overlay
from .frames import blend, colour_frame, display_frames, to_display_image
from .style import FRAME_FORMATS, MAPPINGS, FlowStyle, PathLike, check_mapping

__all__ = [
    "FRAME_FORMATS",
    "FlowStyle",
    "MAPPINGS",
    "PathLike",
    "blend",
    "check_mapping",
    "class_label",
    "class_names_for",
    "colour_frame",
    "display_frames",
    "flow_figure",
    "flow_gif",
    "flow_mp4",
    "flow_stills",
    "imagenet_class_names",
    "overlay",
    "to_display_image",
]
