"""Architecture knowledge: one adapter per model family, found by :func:`get_adapter`."""

from __future__ import annotations

from typing import List, Mapping, Optional, Type

from torch import Tensor, nn

from ..errors import InvalidInputTypeError, UnsupportedModelError
from .base import AttentionSite, ModelAdapter
from .huggingface import HuggingFaceViTAdapter
from .timm_beit_eva import TimmBeitAdapter, TimmEvaAdapter
from .timm_cait import TimmCaitAdapter
from .timm_common import CLASSIFIER_WEIGHT_KEYS, architecture_name
from .timm_swin import TimmSwinAdapter
from .timm_vit import TimmVisionTransformerAdapter
from .timm_xcit import TimmXcitAdapter
from .wrappers import eager_calls, eager_model, explanation_pass, model_lock, unwrap_model

#: Tried in order; the first whose ``matches`` accepts the model wins. The timm classes
#: are unrelated (none subclasses another), so their order does not matter among them;
#: the Hugging Face adapter matches by class name without importing transformers.
ADAPTERS: List[Type[ModelAdapter]] = [
    TimmVisionTransformerAdapter,
    TimmCaitAdapter,
    TimmXcitAdapter,
    TimmBeitAdapter,
    TimmEvaAdapter,
    TimmSwinAdapter,
    HuggingFaceViTAdapter,
]


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, or :class:`UnsupportedModelError` naming what is.

    ``model`` may be wrapped in ``DataParallel``, ``DistributedDataParallel`` or
    ``torch.compile``: the adapter describes the module inside."""
    if not isinstance(model, nn.Module):
        raise InvalidInputTypeError(
            f"DAAM needs the model as a torch.nn.Module, got {type(model).__name__}"
        )
    base = unwrap_model(model)
    for adapter_cls in ADAPTERS:
        if adapter_cls.matches(base):
            return adapter_cls(base)
    supported = "; ".join(a.description for a in ADAPTERS)
    raise UnsupportedModelError(
        f"DAAM does not support {type(base).__name__}: it needs a Vision Transformer "
        f"with a supported attention layout. Supported: {supported}. "
        "See docs/models.md"
    )


def model_name(model: nn.Module) -> Optional[str]:
    """The architecture name ``model`` carries (timm's ``pretrained_cfg``), or ``None``;
    for any module, supported or not (a memory bank built with a ``feature_fn``)."""
    return architecture_name(unwrap_model(model))


def num_classes_in_state_dict(state: Mapping[str, object]) -> Optional[int]:
    """The classes of the classifier stored in a state dict, or ``None`` when it holds
    none that a supported family would name (a weights file's fact, read before the
    model is built)."""
    for key in CLASSIFIER_WEIGHT_KEYS:
        weight = state.get(key)
        if isinstance(weight, Tensor) and weight.dim() >= 1:
            return int(weight.shape[0])
    return None


__all__ = [
    "ADAPTERS",
    "AttentionSite",
    "HuggingFaceViTAdapter",
    "ModelAdapter",
    "TimmBeitAdapter",
    "TimmCaitAdapter",
    "TimmEvaAdapter",
    "TimmSwinAdapter",
    "TimmVisionTransformerAdapter",
    "TimmXcitAdapter",
    "eager_calls",
    "eager_model",
    "explanation_pass",
    "get_adapter",
    "model_lock",
    "model_name",
    "num_classes_in_state_dict",
    "unwrap_model",
]
