"""The feature a self-supervised explanation and its memory bank are built from.

``feature_fn(model, *inputs) -> (N, D)`` gives one embedding per image; by default the
model's adapter says what it is (for timm ViTs the pooled pre-logits class token).
:func:`feature_forward` turns it into the module that runs: the memory bank embeds a
dataset with it, and :class:`~captum_daam.SelfSupervisedDAAM` hands it to Captum as the
forward function, so a classifier head is never run.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from torch import Tensor, nn

from .adapters import eager_model, get_adapter, unwrap_model
from .adapters.wrappers import data_parallel_like
from .errors import InvalidInputError, InvalidInputTypeError

#: ``feature_fn(model, *inputs) -> (N, D)``: the embedding of a batch. ``model`` is the
#: module that runs (the model itself, or its replica on one device under
#: ``DataParallel``); ``inputs`` are the images followed by any extra forward arguments.
FeatureFn = Callable[..., Tensor]


class FeatureForward(nn.Module):
    """``feature_fn(model, *inputs)`` as a module, so ``DataParallel`` can replicate it.

    The module has no mode of its own: :attr:`training` is the wrapped model's, so
    whoever asks the forward function whether it runs in training mode (dropout) gets
    the model's answer, whenever they ask. ``train()`` / ``eval()`` reach the model as
    for any child module.

    Args:
        model: The model (not wrapped in ``DataParallel``).
        feature_fn: ``feature_fn(model, *inputs) -> (N, D)``.
    """

    def __init__(self, model: nn.Module, feature_fn: FeatureFn) -> None:
        super().__init__()
        self.model = model
        self.feature_fn = feature_fn

    @property
    def training(self) -> bool:
        model = self.__dict__.get("_modules", {}).get("model")
        return bool(model.training) if model is not None else True

    @training.setter
    def training(self, mode: bool) -> None:
        """Ignored: ``train(mode)`` sets the wrapped model's mode through its children."""

    def forward(self, *inputs: Any) -> Tensor:
        return self.feature_fn(self.model, *inputs)


def feature_forward(model: nn.Module, feature_fn: Optional[FeatureFn] = None) -> nn.Module:
    """A module whose forward returns the model's features (N, D).

    Args:
        model: The backbone, possibly in ``DataParallel`` (then the result is a
            ``DataParallel`` module with the same devices, so the features are computed
            on every replica).
        feature_fn: ``feature_fn(model, images, ...) -> (N, D)``; ``None`` uses the
            model family's adapter (for timm ViTs: the pooled pre-logits class-token
            embedding).

    Returns:
        *nn.Module*: its forward takes the images (and any extra forward arguments) and
        returns the features; its ``training`` is the model's.

    Example::

        >>> forward = feature_forward(timm.create_model("vit_small_patch16_224.dino"))
        >>> forward(torch.randn(2, 3, 224, 224)).shape
        torch.Size([2, 384])
    """
    model = eager_model(model)  # a compiled model runs as its eager one
    base = unwrap_model(model)
    if feature_fn is None:
        feature_fn = get_adapter(base).features
    elif not callable(feature_fn):
        raise InvalidInputTypeError(
            f"feature_fn must be callable as feature_fn(model, images, ...) -> (N, D), "
            f"got {type(feature_fn).__name__}"
        )
    module = FeatureForward(base, feature_fn)
    if isinstance(model, nn.DataParallel) and model.device_ids:  # no devices: no-op
        return data_parallel_like(model, module)
    return module


def check_feature_output(features: object, context: str = "feature_fn") -> Tensor:
    """The output of a feature function, checked to be an (N, D) float tensor.

    Args:
        features: What the feature function returned.
        context: How the error messages name the feature function.

    Returns:
        *Tensor*: ``features``, unchanged.

    Raises:
        TypeError: not a tensor, or not floating point.
        ValueError: not (N, D).
    """
    if not isinstance(features, Tensor):
        raise InvalidInputTypeError(
            f"{context} must return a tensor of features (N, D), got {type(features).__name__}"
        )
    if features.dim() != 2:
        raise InvalidInputError(
            f"{context} must return one feature vector per image, shape (N, D); got "
            f"{tuple(features.shape)}. For timm ViTs the default is "
            "model.forward_head(model.forward_features(x), pre_logits=True)"
        )
    if not features.is_floating_point():
        raise InvalidInputTypeError(
            f"{context} returned {features.dtype} features; expected floats"
        )
    return features


__all__ = ["FeatureFn", "FeatureForward", "check_feature_output", "feature_forward"]
