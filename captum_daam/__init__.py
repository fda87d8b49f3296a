"""captum-daam: Dynamic Accumulated Attention Maps for timm Vision Transformers.

    >>> from captum_daam import DAAM
    >>> flow = DAAM(model).attribute(images, return_flow=True)

The public names are imported on first use (PEP 562), so ``import captum_daam`` and the
command line's ``--help`` do not pay for torch, timm and Captum until a name that needs
them is asked for. ``from captum_daam import DAAM`` and ``captum_daam.DAAM`` work as
usual; the errors of :mod:`captum_daam.errors` are imported at once (they need nothing).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any, Dict, List

from .errors import (
    DAAMError,
    InvalidFileError,
    InvalidInputError,
    InvalidInputTypeError,
    NonFiniteScoresError,
    UnsupportedModelError,
)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time see __getattr__
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
    from .input_space import DAAMInput, to_input_space
    from .memory_bank import MemoryBank
    from .result import DAAMFlow
    from .self_supervised import SelfSupervisedDAAM, SelfSupervisedFlow

__version__ = "0.1.0"

#: Public name -> the module (relative to this package) that defines it.
_LAZY: Dict[str, str] = {
    "DAAM": ".attr",
    "model_lock": ".attr",
    "ViTLayerGradCam": ".baselines",
    "attention_rollout": ".baselines",
    "gradient_weighted_rollout": ".baselines",
    "grid_to_tokens": ".baselines",
    "raw_attention": ".baselines",
    "tokens_to_grid": ".baselines",
    "linear_mapping": ".display",
    "sigmoid_mapping": ".display",
    "upsample": ".display",
    "DAAMInput": ".input_space",
    "to_input_space": ".input_space",
    "MemoryBank": ".memory_bank",
    "DAAMFlow": ".result",
    "SelfSupervisedDAAM": ".self_supervised",
    "SelfSupervisedFlow": ".self_supervised",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # later look-ups do not come back here
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))


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
