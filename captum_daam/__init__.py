"""captum-daam: Dynamic Accumulated Attention Maps for timm Vision Transformers.

    >>> from captum_daam import DAAM
    >>> flow = DAAM(model).attribute(images, return_flow=True)
"""

from .attr import DAAM
from .display import linear_mapping, sigmoid_mapping, upsample
from .errors import UnsupportedModelError
from .memory_bank import MemoryBank
from .result import DAAMFlow
from .self_supervised import SelfSupervisedDAAM, SelfSupervisedFlow

__version__ = "0.1.0"

__all__ = [
    "DAAM",
    "DAAMFlow",
    "MemoryBank",
    "SelfSupervisedDAAM",
    "SelfSupervisedFlow",
    "UnsupportedModelError",
    "linear_mapping",
    "sigmoid_mapping",
    "upsample",
]
