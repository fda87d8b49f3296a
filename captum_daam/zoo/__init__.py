"""Embedded default model and its procedural training data.

* :mod:`.synthetic`: :class:`SyntheticShapes`, a deterministic, seedable dataset of
  shapes in clutter with exact boxes and masks.
* :mod:`.model`: :func:`load_default_model`, a tiny timm ViT (64 px, 8 px patches)
  whose weights ship with the package, and its metadata :data:`DEFAULT_MODEL_INFO`.
* :mod:`.train`: the recipe that produced the shipped weights
  (``python -m captum_daam.zoo.train``).
"""

from .model import (
    DEFAULT_MODEL_INFO,
    DEFAULT_WEIGHTS_PATH,
    ModelInfo,
    create_default_model,
    load_default_model,
    read_checkpoint_metadata,
)
from .synthetic import (
    CLASS_NAMES,
    MEAN,
    STD,
    ShapeBatch,
    ShapeSample,
    SyntheticShapes,
    denormalize,
    normalize,
    render,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_MODEL_INFO",
    "DEFAULT_WEIGHTS_PATH",
    "MEAN",
    "STD",
    "ModelInfo",
    "ShapeBatch",
    "ShapeSample",
    "SyntheticShapes",
    "create_default_model",
    "denormalize",
    "load_default_model",
    "normalize",
    "read_checkpoint_metadata",
    "render",
]
