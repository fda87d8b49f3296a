"""The evaluation's plots: one line style per method (distinct past ten), BoxAcc
against the CAM threshold and the mean deletion and insertion curves.

matplotlib is imported only when a figure is drawn (the Agg backend, files only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor


def line_style(index: int, name: str, emphasis: Optional[str] = "daam") -> Dict[str, Any]:
    """Matplotlib keyword arguments for the ``index``-th line, named ``name``.

    Matplotlib's ten default colours, solid for the first ten lines and dashed for the
    next ten (so that lines 0 and 10 differ), and a thicker line for ``emphasis``.

    Example::

        >>> line_style(10, "integrated_gradients")
        {'color': 'C0', 'linestyle': '--', 'linewidth': 1.2}
    """
    return {
        "color": f"C{index % 10}",
        "linestyle": "-" if index % 20 < 10 else "--",
        "linewidth": 2.6 if name == emphasis else 1.2,
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_box_accuracy(
    curves: Mapping[str, Tensor], taus: Tensor, path: Path, emphasis: Optional[str] = "daam"
) -> None:
    """Save BoxAcc (IoU >= 0.5) against tau, one line per method, to ``path``.

    Args:
        curves: ``{method: (T,) BoxAcc}``, as
            :func:`~captum_daam.evaluation.statistics.box_accuracy_curves` gives them.
        taus: (T,) the thresholds.
        path: The image file.
        emphasis: The method drawn thicker.

    Example::

        >>> plot_box_accuracy(box_accuracy_curves(records, ids), DEFAULT_TAUS, out / "b.png")
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4))
    for index, (method, curve) in enumerate(curves.items()):
        ax.plot(taus.numpy(), curve.numpy(), label=method, **line_style(index, method, emphasis))
    ax.set_xlabel("CAM threshold tau")
    ax.set_ylabel("BoxAcc (IoU >= 0.5)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_deletion_insertion(
    curves: Mapping[str, Mapping[str, Tensor]], path: Path, emphasis: Optional[str] = "daam"
) -> None:
    """Save the mean deletion and insertion curves side by side to ``path``.

    Args:
        curves: ``{method: {"deletion": (S,), "insertion": (S,)}}``, as
            :func:`~captum_daam.evaluation.statistics.mean_deletion_insertion` gives them.
        path: The image file.
        emphasis: The method drawn thicker.

    Example::

        >>> plot_deletion_insertion(mean_deletion_insertion(records, ids), out / "d.png")
    """
    plt = _pyplot()
    kinds = ("deletion", "insertion")
    fig, axes = plt.subplots(1, 2, figsize=(11.6, 4))
    for index, (method, entry) in enumerate(curves.items()):
        for ax, kind in zip(axes, kinds, strict=False):
            mean = entry[kind]
            ax.plot(
                torch.linspace(0, 1, len(mean)).numpy(),
                mean.numpy(),
                label=method,
                **line_style(index, method, emphasis),
            )
    for ax, kind in zip(axes, kinds, strict=False):
        ax.set_title(f"{kind} (mean over images)")
        ax.set_xlabel(f"fraction of patches {'removed' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("target probability")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["line_style", "plot_box_accuracy", "plot_deletion_insertion"]
