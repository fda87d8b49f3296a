"""The flows of each image's k highest-scoring classes, for the viewer's class buttons."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from .._core.targets import logits_tensor
from ..attr import DAAM, model_lock
from ..errors import InvalidInputError
from ..result import DAAMFlow


def explain_top_k(
    daam: DAAM,
    images: Tensor,
    k: int = 3,
    additional_forward_args: Optional[object] = None,
    token: Optional[str] = None,
    logits: Optional[Tensor] = None,
) -> List[DAAMFlow]:
    """DAAM flows for each image's k highest-scoring classes.

    One forward pass without gradients finds the top k classes of every image (none when
    ``logits`` are given), then one DAAM pass per rank explains them.

    Args:
        daam: The explainer.
        images: Images (N, C, H, W).
        k: How many classes per image.
        additional_forward_args: Extra positional arguments for the model.
        token: Readout token, as for :meth:`DAAM.attribute`.
        logits: The model's logits for ``images`` (N, classes), when the caller has them
            already; ``None`` runs the forward pass.

    Returns:
        ``k`` flows; flow ``j`` explains every image's class of rank ``j`` (0 = top).

    Example:
        >>> flows = explain_top_k(DAAM(model), images, k=3)
        >>> [flow.targets for flow in flows]  # top-1, top-2, top-3 classes
    """
    extra = additional_forward_args
    if extra is not None and not isinstance(extra, tuple):
        extra = (extra,)
    if logits is None:
        with torch.no_grad(), model_lock(daam.adapter.model):
            output = daam.adapter.logits(daam.forward_func(images, *(extra or ())))
        logits = logits_tensor(output)
    if k < 1 or k > logits.shape[1]:
        raise InvalidInputError(f"k must lie in [1, {logits.shape[1]}], got {k}")
    ranks = logits.topk(k, dim=1).indices
    return [
        daam.attribute(
            images,
            target=ranks[:, j],
            additional_forward_args=additional_forward_args,
            return_flow=True,
            token=token,
        )
        for j in range(k)
    ]
