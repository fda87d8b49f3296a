"""Captum-style targets for classifiers, and the score DAAM differentiates."""

from __future__ import annotations

from numbers import Integral
from typing import List, Optional, Tuple, Union, overload

import torch
from captum._utils.typing import TargetType
from torch import Tensor

from ..errors import (
    InvalidInputError,
    InvalidInputTypeError,
    NonFiniteScoresError,
    UnsupportedModelError,
)

#: Class indices a long tensor holds.
_LONG = torch.iinfo(torch.long)


def _as_int(value: object) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, tuple) and len(value) == 1:
        return _as_int(value[0])
    if (
        isinstance(value, Tensor)
        and value.numel() == 1
        and not value.is_meta
        and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    ):
        return int(value.item())
    return None


def _long_tensor(values: list, device: torch.device) -> Tensor:
    """Class indices as a long tensor; indices no long can hold are out of any range."""
    huge = [v for v in values if not _LONG.min <= v <= _LONG.max]
    if huge:
        raise InvalidInputError(
            f"target {huge[:3]} out of range: class indices must lie in [0, num_classes)"
        )
    return torch.tensor(values, dtype=torch.long, device=device)


@overload
def target_tensor(target: None, num_examples: int, device: torch.device) -> None: ...


@overload
def target_tensor(
    target: Union[int, Tuple[int, ...], List[int], Tensor], num_examples: int, device: torch.device
) -> Tensor: ...


@overload
def target_tensor(
    target: TargetType, num_examples: int, device: torch.device
) -> Optional[Tensor]: ...


def target_tensor(target: TargetType, num_examples: int, device: torch.device) -> Optional[Tensor]:
    """Normalise a Captum target for an (N, classes) output to N class indices.

    Accepts what Captum accepts for classifiers: ``None`` (each example's predicted
    class), an int, a one-element tuple, an integer tensor with one or N elements, or a
    list of N ints. Returns ``None`` for the predicted class, else a long tensor (N,).
    """
    if target is None:
        return None
    single = _as_int(target)
    if single is not None:
        return _long_tensor([single] * num_examples, device)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise InvalidInputTypeError(
                f"target tensor has dtype {target.dtype}; pass class indices as an "
                "integer tensor, e.g. torch.tensor([3, 7])"
            )
        if target.is_meta:
            raise InvalidInputError("target is a meta tensor and holds no class indices")
        if target.dim() == 1 and target.numel() == num_examples:
            return target.to(device=device, dtype=torch.long)
        raise InvalidInputError(
            f"target tensor of shape {tuple(target.shape)} does not match a batch of "
            f"{num_examples}; pass one class index or one per example, shape "
            f"({num_examples},)"
        )
    if isinstance(target, list):
        values = [_as_int(t) for t in target]
        if len(values) != num_examples or any(v is None for v in values):
            raise InvalidInputError(
                f"target list must hold one int class index per example ({num_examples}),"
                f" got {target!r}"
            )
        return _long_tensor(values, device)
    raise InvalidInputTypeError(
        f"unsupported target {target!r}; a classifier takes None (predicted class), an "
        "int, a list of N ints or an integer tensor of N class indices"
    )


def check_class_range(targets: Tensor, num_classes: Optional[int], what: str = "target") -> None:
    """Refuse class indices outside ``[0, num_classes)``, naming them and the range.

    Args:
        targets: Class indices (N,).
        num_classes: Classes of the model; ``None`` (unknown) checks nothing.
        what: How the indices are called in the message (``"target"``, ``"--target"``).
    """
    if num_classes is None:
        return
    bad = (targets < 0) | (targets >= num_classes)
    if bool(bad.any()):
        raise InvalidInputError(
            f"{what} {targets[bad].tolist()} out of range for a model with "
            f"{num_classes} classes; {what}s must lie in [0, {num_classes - 1}]"
        )


def logits_tensor(output: object) -> Tensor:
    """``output`` if it is (N, classes) logits; otherwise a clear error.

    Args:
        output: What the adapter's ``logits`` returned for the model's output.

    Returns:
        ``output``, a tensor (N, classes).

    Raises:
        InvalidInputError: The model returned a tuple (a distilled DeiT in training mode).
        UnsupportedModelError: The output is no 2-D tensor (a backbone without a head).
    """
    if isinstance(output, (tuple, list)):
        raise InvalidInputError(
            "the model returned a tuple, not (N, classes) logits; a distilled DeiT does "
            "this in training mode with distilled_training=True: call model.eval()"
        )
    if not isinstance(output, Tensor) or output.dim() != 2:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output)
        raise UnsupportedModelError(
            f"DAAM explains classifiers with (N, classes) logits; the model returned "
            f"{shape}. For a backbone without a classifier head use SelfSupervisedDAAM"
        )
    return output


def class_scores(output: object, targets: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The logits DAAM explains, and the classes they belong to.

    Args:
        output: The model's output, expected to be (N, classes) logits.
        targets: Class indices (N,), or ``None`` for each example's predicted class.

    Returns:
        ``(scores, targets)``: the selected logits (N,) and the classes used (N,).
    """
    output = logits_tensor(output)
    num_classes = output.shape[1]
    if num_classes == 0:
        raise UnsupportedModelError(
            "the model has no classifier head (num_classes=0); explain it with "
            "SelfSupervisedDAAM and a memory bank, or attach a head"
        )
    if targets is None:
        targets = output.detach().argmax(dim=1)
    else:
        check_class_range(targets, num_classes)
    scores = output.gather(1, targets.unsqueeze(1)).squeeze(1)
    if not bool(torch.isfinite(scores.detach()).all()):
        raise NonFiniteScoresError(
            "the model produced non-finite logits for these inputs; check the inputs "
            "and, in float16, try bfloat16 or float32"
        )
    return scores, targets
