"""Line styles shared by the evaluation's plots: one per method, distinct past ten."""

from __future__ import annotations

from typing import Any, Dict, Optional


def line_style(index: int, name: str, emphasis: Optional[str] = "daam") -> Dict[str, Any]:
    """Matplotlib keyword arguments for the ``index``-th line, named ``name``.

    Matplotlib's ten default colours, solid for the first ten lines and dashed for the
    next ten (so that lines 0 and 10 differ), and a thicker line for ``emphasis``.

    Example::

        >>> line_style(10, "integrated_gradients")
        {'color': 'C0', 'linestyle': '--', 'linewidth': 1.2}
    """
    return {"color": f"C{index % 10}", "linestyle": "-" if index % 20 < 10 else "--",
            "linewidth": 2.6 if name == emphasis else 1.2}
