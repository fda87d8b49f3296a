"""The ``captum-daam`` command line: ``explain`` images with any timm ViT, ``evaluate``
DAAM against its peers, or run the ``demo`` on the embedded default model, offline.

User errors (every :class:`~captum_daam.errors.DAAMError`: missing or corrupt files,
unsafe weights, unknown model names, weights that do not fit, unwritable output folders)
print one line and exit with status 2, never a traceback. Inside a folder, an image that
cannot be read or is over ``--max-pixels`` is reported and skipped.

* :mod:`.parser`: the arguments and :func:`main`;
* :mod:`.common`: :class:`UserError`, the output folder and the device;
* :mod:`.models`: the model and its preprocessing;
* :mod:`.weights`: weights files, read safely;
* :mod:`.images`: the image files, with the pixel cap;
* :mod:`.explain`: ``explain`` and ``demo``;
* :mod:`.evaluate`: ``evaluate`` (the protocol itself is
  :mod:`captum_daam.evaluation.protocol`).

Example::

    $ captum-daam explain photos/ --model vit_small_patch16_224 --topk 3 --html
"""

from .common import UserError
from .parser import build_parser, main

__all__ = ["UserError", "build_parser", "main"]
