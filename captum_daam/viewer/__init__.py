"""The flow viewer: one self-contained interactive HTML page for DAAM results.

Captum Insights was retired in Captum 0.9, and it only ever took input-attribution
methods. The flow viewer is its successor for DAAM: a single HTML file, with every
picture embedded and a little inline script, that opens offline in any browser with no
server. For several images it shows the image with a block slider, the accumulated maps
``D_b`` or each block's own map ``L_b``, an opacity control, each block's share of the
final map, and buttons that switch between the explained classes (e.g. the top k).

    >>> from captum_daam import DAAM
    >>> from captum_daam.viewer import explain_top_k, write_flow_viewer
    >>> flows = explain_top_k(DAAM(model), images, k=3)
    >>> write_flow_viewer("flow.html", images, flows, class_names=names, mean=m, std=s)

The page takes its initial state from the URL fragment, e.g.
``flow.html#block=3&mode=block&opacity=0.4&rank=1``, and keeps the fragment up to date,
so a view can be shared as a link.

Frames are rendered as by :func:`captum_daam.visualization.flow_figure`: the maps are
upsampled to the image and put through the same display mapping
(:func:`~captum_daam.visualization.display_frames`) and colour map, both set by the same
:class:`~captum_daam.visualization.FlowStyle`; the page only blends them over the image
with the chosen opacity.

Modules: ``top_k`` (:func:`explain_top_k`), ``data`` (:func:`viewer_data`, the page's
JSON), ``page`` (:func:`render_flow_viewer`, :func:`write_flow_viewer`); the page's
HTML, CSS and JavaScript are the package data files ``assets/viewer.*``.
"""

from ..visualization.style import FlowStyle
from .data import viewer_data
from .page import render_flow_viewer, write_flow_viewer
from .top_k import explain_top_k

__all__ = ["FlowStyle", "explain_top_k", "render_flow_viewer", "viewer_data", "write_flow_viewer"]
