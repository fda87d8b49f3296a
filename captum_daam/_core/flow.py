"""One forward and one backward for every block and the whole batch."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from captum._utils.common import _sort_key_list
from captum._utils.gradient import compute_layer_gradients_and_eval
from torch import Tensor

from ..adapters.base import AttentionSite
from .capture import record_readout_rows
from .decomposition import token_relevance
from .maps import channel_weights

#: Maps the model's output to the scalar per example that DAAM explains, (N,).
ScoreFn = Callable[[Any], Tensor]


def relevance_flow(
    forward_func: Callable[..., Any],
    sites: Sequence[AttentionSite],
    inputs: Tuple[Tensor, ...],
    score_fn: ScoreFn,
    token_index: int,
    additional_forward_args: Optional[object] = None,
    signed_weights: bool = False,
    device_ids: Optional[List[int]] = None,
) -> Tensor:
    """Signed token relevance of every site, ``sum_c weight(C_b)_c * S_b[j, c]``.

    The forward hooks record the readout attention row and values of every site, and
    Captum's ``compute_layer_gradients_and_eval`` takes ``C_b = d score / d Z_b`` at the
    inputs of every site's projection in a single backward pass.

    Returns:
        (N, sites, tokens) in float32 (float64 for float64 models), prefix tokens first.
    """

    def scored_forward(*args: Any) -> Tensor:
        return score_fn(forward_func(*args))

    if device_ids is None:
        device_ids = getattr(forward_func, "device_ids", None)
    with record_readout_rows(sites, token_index) as recorder:
        grads, _ = compute_layer_gradients_and_eval(
            scored_forward,
            [site.z_module for site in sites],
            inputs,
            additional_forward_args=additional_forward_args,
            device_ids=device_ids,
            attribute_to_layer_input=True,
        )
    rows = recorder.gather(_sort_key_list(recorder.devices, device_ids))
    relevance = []
    for site, (a0, v), (grad_z,) in zip(sites, rows, grads):
        grad_row = grad_z[:, site.readout_row_of_z(token_index)]
        weights = channel_weights(grad_row.to(a0.device), signed_weights)
        relevance.append(token_relevance(a0, v, weights))
    return torch.stack(relevance, dim=1)
