"""The viewer page: the package's HTML, CSS and JavaScript filled in with the data."""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Dict

from torch import Tensor

from ..visualization import FlowStyle, PathLike
from .data import Flows, viewer_data

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@cache
def _asset(name: str) -> str:
    """The text of ``assets/<name>``, package data of :mod:`captum_daam.viewer`."""
    return files(__package__).joinpath("assets").joinpath(name).read_text(encoding="utf-8")


def _fill(name: str, values: Dict[str, str]) -> str:
    """The asset ``name`` with every ``{{key}}`` replaced by ``values[key]``, in one pass
    (text put in is never scanned again)."""
    template = _asset(name)
    wanted = set(_PLACEHOLDER.findall(template))
    if wanted != set(values):
        raise RuntimeError(
            f"assets/{name} has the placeholders {sorted(wanted)}, "
            f"but {sorted(values)} were given: reinstall captum-daam"
        )
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def render_flow_viewer(
    images: Tensor, flows: Flows, *, title: str = "DAAM attention flow", **arguments: object
) -> str:
    """The flow viewer page as an HTML string; see :func:`write_flow_viewer`.

    Args:
        images: The preprocessed images (N, C, H, W) that were explained.
        flows: One flow of these images, or several (one per class to switch between).
        title: Page title.
        **arguments: The keyword arguments of :func:`~captum_daam.viewer.viewer_data`:
            ``class_names``, ``image_names``, ``mean``, ``std``, ``style`` and the fields
            of :class:`~captum_daam.visualization.FlowStyle`.

    Returns:
        The page, one self-contained HTML document.

    Example:
        >>> page = render_flow_viewer(images, flows, class_names=names, alpha=0.4)
    """
    style, rest = FlowStyle.split(arguments)
    data = viewer_data(images, flows, style=style, **rest)  # type: ignore[arg-type]
    # "<" escaped so that no string in the data can close the script element.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return _fill(
        "viewer.html",
        {
            "title": html.escape(title),
            "css": _fill("viewer.css", {"size": str(int(style.display_size))}),
            "data": payload,
            "script": _fill(
                "viewer.js",
                {"alpha": repr(float(style.alpha)), "frame_ms": str(int(style.frame_ms))},
            ),
        },
    )


def write_flow_viewer(
    path: PathLike,
    images: Tensor,
    flows: Flows,
    *,
    title: str = "DAAM attention flow",
    **arguments: object,
) -> Path:
    """Write the interactive flow viewer: one self-contained HTML file, opens offline.

    The page shows every image in a panel with its map over it; a block slider (and a
    play button) steps through the blocks, a switch shows the accumulated maps ``D_b``
    or each block's own map ``L_b``, a slider sets the opacity of the map, and per image
    buttons (or one selector for all images) switch between the explained classes. Bars
    under each image give every block's share of the final map; clicking one jumps to
    that block. The state is kept in the URL fragment
    (``#block=3&mode=acc&opacity=0.55&rank=0``).

    Args:
        path: Where to write the page (``.html``).
        images: The preprocessed images (N, C, H, W) that were explained.
        flows: A :class:`~captum_daam.DAAMFlow` of these images, or several (one per
            class to switch between, e.g. :func:`explain_top_k`), each over all N images.
        title: Page title.
        **arguments: The keyword arguments of :func:`~captum_daam.viewer.viewer_data`:
            ``class_names`` (names of the classes by index), ``image_names`` (one per
            image, shown above it), ``mean`` and ``std`` (the model's normalisation, to
            show the images in their colours), ``style`` (a
            :class:`~captum_daam.visualization.FlowStyle`) and any field of the style
            to replace: ``mapping`` and ``cmap`` of the frames, ``alpha`` (the initial
            opacity), ``display_size`` (CSS pixels per image), ``frame_ms`` (time per
            block when playing), ``image_format`` (``"jpeg"``, the default, or ``"png"``
            for the map frames; images are always PNG) and ``quality``.

    Returns:
        The path written.

    Example:
        >>> flows = explain_top_k(DAAM(model), images, k=3)
        >>> write_flow_viewer("flow.html", images, flows, class_names=names, alpha=0.4)
    """
    page = render_flow_viewer(images, flows, title=title, **arguments)
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
