"""The evaluation harness: every method on the same images in one run, cached per image,
sharded over processes, summarised into tables.

:func:`evaluate` explains each image with each method (the ground-truth class by
default, as the weakly-supervised localisation protocol does), and stores per image and
method one JSON record: the IoU of the largest component's box at every threshold tau,
the energy inside the boxes (pointing game), the deletion and insertion curves and
AUCs, Captum's infidelity and sensitivity-max on the images asked for, and the time
the explanation took. Records already in the cache are not recomputed, so an
interrupted run resumes where it stopped. Under ``torch.distributed`` (``torchrun``)
every rank explains its own share of the images (``index % world_size``) and the
records are gathered on every rank.

:func:`summarize` turns records into one row per method: tau is chosen on a tuning split
and the numbers are reported on a separate evaluation split (never the same images);
:func:`write_report` writes JSON, a Markdown table and plots.

The harness lives in one module per concern; this module gathers their public names:

* :mod:`.cache`: the per-image resumable cache (file names, settings check, atomic
  records);
* :mod:`.loop` and :mod:`.measure`: the run loop and one method on one batch
  (:class:`~.measure.MeasureSettings`);
* :mod:`.statistics`: :func:`summarize`, :func:`paired_comparison`,
  :func:`box_accuracy_curves`;
* :mod:`.reports`: :func:`markdown_table`, :func:`paired_markdown`,
  :func:`write_report` (with the plots of :mod:`.plotting`).
"""

from __future__ import annotations

from .cache import Record
from .loop import evaluate
from .reports import markdown_table, paired_markdown, write_report
from .statistics import box_accuracy_curves, paired_comparison, summarize

__all__ = [
    "Record",
    "box_accuracy_curves",
    "evaluate",
    "markdown_table",
    "paired_comparison",
    "paired_markdown",
    "summarize",
    "write_report",
]
