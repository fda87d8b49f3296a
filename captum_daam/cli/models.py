"""The model to explain: the embedded default or a timm model, pretrained or from a local
weights file, with its preprocessing and class names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from torch import nn

from .common import UserError
from .weights import misfit, state_dict_from

EMBEDDED = "embedded"


@dataclass
class LoadedModel:
    """A model in eval mode with what the command line needs around it."""

    model: nn.Module
    name: str
    transform: Callable
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    class_names: Optional[Sequence[str]]


def _num_classes(model: nn.Module) -> int:
    """The model's classes as its adapter knows them; 0 for an unsupported model (the
    explainer refuses it later, with the adapter's message)."""
    from ..adapters import get_adapter
    from ..errors import UnsupportedModelError

    try:
        return int(get_adapter(model).num_classes or 0)
    except UnsupportedModelError:
        return 0


def _timm_model(name: str, weights: Optional[str]) -> nn.Module:
    """timm's ``name`` with its pretrained weights (downloaded) or the local ``weights``
    file (read by :func:`state_dict_from`, loaded strictly), or a one-line error."""
    import timm

    from ..adapters import num_classes_in_state_dict

    if weights is None:
        try:
            return timm.create_model(name, pretrained=True)
        except Exception as error:  # the hub cannot be reached, or similar
            raise UserError(
                f"could not load pretrained weights for {name} ({type(error).__name__}); "
                "offline? pass --weights PATH to a local .safetensors or .pth file"
            ) from None
    state = state_dict_from(Path(weights))
    classes = num_classes_in_state_dict(state)
    extra: Dict[str, Any] = {"num_classes": classes} if classes is not None else {}
    try:
        model = timm.create_model(name, pretrained=False, **extra)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as error:
        raise UserError(
            f"weights {weights} do not fit {name}: {misfit(error)}; pass the "
            "--model the weights were saved from"
        ) from None
    return model


def load_model(name: Optional[str], weights: Optional[str]) -> LoadedModel:
    """The embedded model (``name`` None or "embedded") or a timm model, with its
    preprocessing.

    Args:
        name: A timm model name, or None / ``"embedded"`` for the embedded shapes ViT.
        weights: A local .safetensors / .pth file, loaded strictly (the head is sized
            from it); None downloads timm's pretrained weights.

    Returns:
        The :class:`LoadedModel`, in eval mode.

    Example::

        >>> loaded = load_model("vit_small_patch16_224", "vit_small.safetensors")
    """
    from timm.data import create_transform, resolve_data_config

    from ..visualization import class_names_for

    if name in (None, EMBEDDED) and weights is None:
        from ..zoo import DEFAULT_MODEL_INFO as info
        from ..zoo import load_default_model

        config: Dict[str, Any] = {
            "input_size": (3, info.image_size, info.image_size),
            "mean": info.mean,
            "std": info.std,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
        }
        return LoadedModel(
            load_default_model(),
            EMBEDDED,
            create_transform(**config),
            info.mean,
            info.std,
            info.class_names,
        )
    if name in (None, EMBEDDED):
        raise UserError("--weights needs --model NAME (the timm model the weights fit)")

    import timm

    if not timm.is_model(name):
        raise UserError(f"unknown model name {name!r}; list names with timm.list_models()")
    model = _timm_model(name, weights)
    config = resolve_data_config({}, model=model)
    return LoadedModel(
        model.eval(),
        name,
        create_transform(**config),
        config["mean"],
        config["std"],
        class_names_for(_num_classes(model)),
    )


__all__ = ["EMBEDDED", "LoadedModel", "load_model", "state_dict_from"]
