"""What every baseline checks before it explains: gradients allowed, images, targets.

The baselines (and the evaluation registry that binds them to a model) share these
checks, so that bad input gets the same clear error from each of them. The patch grid,
the prefix tokens and the number of classes come from the model's adapter
(:func:`captum_daam.adapters.get_adapter`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple, Union

import torch
from captum._utils.typing import TargetType
from torch import Tensor

from .._core.inputs import check_images, require_gradients
from .._core.inputs import check_inputs as _check_inputs
from .._core.targets import check_class_range, logits_tensor, target_tensor
from ..adapters import explanation_pass
from ..adapters.base import ModelAdapter
from ..errors import InvalidInputError

#: Images (N, C, H, W), or a tuple whose first element is the images (Captum's inputs).
Inputs = Union[Tensor, Tuple[Tensor, ...]]

#: Captum's target for an (N, classes) output as N class indices, or ``None`` for the
#: predicted classes: ``class_targets(target, num_examples, device)``. Accepts ``None``,
#: an int, a one-element tuple, a list of N ints, an integer tensor of 1 or N elements.
class_targets = target_tensor


def check_inputs(
    inputs: Inputs, adapter: ModelAdapter
) -> Tuple[Tuple[Tensor, ...], Tuple[int, int]]:
    """Captum-style inputs as a tuple, the images first, and their patch grid.

    Args:
        inputs: Images (N, C, H, W), or a tuple whose first element is the images.
        adapter: The model's adapter.

    Returns:
        ``(inputs, grid)``: the inputs as a tuple (inference tensors copied, so that
        autograd takes them) and the patch grid (rows, cols).

    Raises:
        InvalidInputTypeError / InvalidInputError: images that are not a finite float
            batch (N, C, H, W) in the model's dtype, of a size the model takes; an empty
            tuple. The message names the fix.
    """
    return _check_inputs(inputs, adapter)


def check_batch(
    method: str, images: Tensor, targets: TargetType, adapter: ModelAdapter
) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
    """The checks of an explainer that takes images and the classes to explain.

    Args:
        method: The method's name, for the messages.
        images: Preprocessed images (N, C, H, W) for the adapter's model.
        targets: Classes, one per image (an integer tensor (N,), a list of N ints, or one
            int for all); required.
        adapter: The model's adapter.

    Returns:
        ``(images, targets, grid)``: the images (cloned out of an inference tensor, so
        that autograd takes them), the targets as a long tensor (N,) on the images'
        device, and the patch grid (rows, cols).

    Raises:
        RuntimeError: inside ``torch.inference_mode()``.
        ValueError / TypeError: bad images, missing targets, targets that do not match
            the batch or lie outside the model's classes.

    Example::

        >>> images, targets, grid = check_batch("gradcam", images, [3, 7], adapter)
    """
    require_gradients(method)
    grid = check_images(images, adapter)
    if images.is_inference():
        images = images.clone()
    if targets is None:
        raise InvalidInputError(
            "targets are required: pass the labels, or model(images).argmax(1) for the "
            "predicted classes"
        )
    checked = target_tensor(targets, int(images.shape[0]), images.device)
    assert checked is not None
    check_class_range(checked, adapter.num_classes, "target")
    return images, checked, grid


def resolve_targets(
    forward: Callable[..., Any],
    adapter: ModelAdapter,
    inputs: Sequence[Tensor],
    target: TargetType,
    additional_forward_args: Sequence[Any] = (),
) -> Tensor:
    """Captum's ``target`` as N class indices; ``None`` is each example's predicted class.

    Args:
        forward: The model (or its forward function).
        adapter: The model's adapter (reads the logits out of the output, knows the
            number of classes).
        inputs: The model's inputs, the images (N, C, H, W) first.
        target: ``None``, an int, a list of N ints or an integer tensor.
        additional_forward_args: Extra positional arguments for the model.

    Returns:
        A long tensor (N,) on the images' device, within the model's classes. The
        predicted classes cost one forward pass without gradients.
    """
    images = inputs[0]
    targets = target_tensor(target, int(images.shape[0]), images.device)
    if targets is None:
        with torch.no_grad():
            logits = logits_tensor(adapter.logits(forward(*inputs, *additional_forward_args)))
        targets = logits.argmax(dim=1)
    else:
        check_class_range(targets, adapter.num_classes, "target")
    return targets


__all__ = [
    "check_batch",
    "check_inputs",
    "explanation_pass",
    "class_targets",
    "require_gradients",
    "resolve_targets",
]
