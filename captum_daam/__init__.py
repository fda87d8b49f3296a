"""captum-daam: Dynamic Accumulated Attention Maps for timm Vision Transformers.

    >>> from captum_daam import DAAM
    >>> flow = DAAM(model).attribute(images, return_flow=True)
"""

from .attr import DAAM, model_lock
from .baselines import (
    ViTLayerGradCam,
    attention_rollout,
    gradient_weighted_rollout,
    grid_to_tokens,
    raw_attention,
    tokens_to_grid,
)
from .display import linear_mapping, sigmoid_mapping, upsample
from .errors import (
    DAAMError,
    InvalidFileError,
    InvalidInputError,
    InvalidInputTypeError,
    NonFiniteScoresError,
    UnsupportedModelError,
)
from .input_space import DAAMInput, to_input_space
from .memory_bank import MemoryBank
from .result import DAAMFlow
from .self_supervised import SelfSupervisedDAAM, SelfSupervisedFlow

__version__ = "0.1.0"

__all__ = [
    "DAAM",
    "DAAMFlow",
    "DAAMInput",
    "MemoryBank",
    "SelfSupervisedDAAM",
    "SelfSupervisedFlow",
    "UnsupportedModelError",
    "DAAMError",
    "InvalidFileError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "NonFiniteScoresError",
    "ViTLayerGradCam",
    "attention_rollout",
    "gradient_weighted_rollout",
    "grid_to_tokens",
    "linear_mapping",
    "model_lock",
    "raw_attention",
    "sigmoid_mapping",
    "to_input_space",
    "tokens_to_grid",
    "upsample",
]
