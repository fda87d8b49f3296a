"""One forward and one backward for every block and the whole batch.

:func:`site_gradients` is the pass itself (what every site's attention computed, and the
gradient of the score at every site's projection input ``Z``); :func:`relevance_flow`
turns it into DAAM's token relevance, and :mod:`.attention_gradients` into the attention
gradients of the gradient-weighted rollout baseline (:mod:`captum_daam.baselines.chefer`).
:func:`attention_matrices` is the forward alone, for the attention-only baselines.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from captum._utils.common import _sort_key_list
from captum._utils.gradient import compute_layer_gradients_and_eval
from torch import Tensor

from .capture import record_attention
from .decomposition import all_queries_relevance, full_attention, token_relevance
from .maps import channel_weights, spread_to_grid
from .sites import AttentionSite, QueryAttention

#: Maps the model's output to the scalar per example that DAAM explains, (N,).
ScoreFn = Callable[[Any], Tensor]


def relevance_flow(
    forward_func: Callable[..., Any],
    sites: Sequence[AttentionSite],
    inputs: Tuple[Tensor, ...],
    score_fn: ScoreFn,
    token_index: Optional[int],
    additional_forward_args: Optional[object] = None,
    signed_weights: bool = False,
    device_ids: Optional[List[int]] = None,
    grid_size: Optional[Tuple[int, int]] = None,
) -> Tensor:
    """Signed token relevance of every site.

    Readout mode (``token_index`` an int): ``sum_c weight(C_b)_c * S_b[j, c]`` with
    ``C_b = d score / d Z_b[readout]``. All-queries mode (``token_index=None``):
    ``sum_i sum_c weight(G_b)[i, c] * A_b[h(c), i, j] * V_b[j, c]`` with
    ``G_b = d score / d Z_b`` (every row), the full attention recomputed one site at a
    time after the backward pass.

    The forward hooks record what each site's attention computed, and Captum's
    ``compute_layer_gradients_and_eval`` takes the gradient at the inputs of every
    site's projection (``Z_b``) in a single backward pass.

    Args:
        grid_size: The model's patch grid; needed in the all-queries mode, where sites of
            hierarchical models (Swin) report on coarser grids that are spread onto it.

    Returns:
        (N, sites, tokens) in float32 (float64 for float64 models): prefix tokens first,
        then the patch tokens in row-major grid order.
    """

    records, grads = site_gradients(
        forward_func, sites, inputs, score_fn, token_index, additional_forward_args, device_ids
    )
    relevance = []
    for site, record, grad_z in zip(sites, records, grads, strict=True):
        if token_index is None:
            if grid_size is None:
                raise ValueError("the all-queries mode needs the model's patch grid")
            relevance.append(_all_queries(record, grad_z, grid_size, signed_weights))
        else:
            a0, v = record
            grad_row = grad_z[:, site.readout_row_of_z(token_index)]
            weights = channel_weights(grad_row.to(a0.device), signed_weights)
            relevance.append(token_relevance(a0, v, weights))
    return torch.stack(relevance, dim=1)


def site_gradients(
    forward_func: Callable[..., Any],
    sites: Sequence[AttentionSite],
    inputs: Tuple[Tensor, ...],
    score_fn: ScoreFn,
    token_index: Optional[int],
    additional_forward_args: Optional[object] = None,
    device_ids: Optional[List[int]] = None,
) -> Tuple[List[Any], List[Tensor]]:
    """Every site's record and ``d score / d Z`` at every site, in one forward and one
    backward pass.

    The forward hooks record what each site's attention computed (readout mode:
    ``(a0, v)`` for readout token ``token_index``; ``token_index=None``: a
    :class:`~captum_daam._core.sites.QueryAttention`), and Captum's
    ``compute_layer_gradients_and_eval`` takes the gradient of ``score_fn(output).sum()``
    at the input of every site's projection (``Z_b``, (N, tokens, channels)). Hooks are
    removed on exit, also on error.

    Returns:
        ``(records, gradients)``, one of each per site in site order, batches
        concatenated over ``DataParallel`` devices in Captum's order.
    """

    def scored_forward(*args: Any) -> Tensor:
        return score_fn(forward_func(*args))

    if device_ids is None:
        device_ids = getattr(forward_func, "device_ids", None)
    with record_attention(sites, token_index) as recorder:
        grads, _ = compute_layer_gradients_and_eval(
            scored_forward,
            [site.z_module for site in sites],
            inputs,
            additional_forward_args=additional_forward_args,
            device_ids=device_ids,
            attribute_to_layer_input=True,
        )
    records = recorder.gather(_sort_key_list(recorder.devices, device_ids))
    return records, [grad_z for (grad_z,) in grads]


def attention_matrices(
    forward_func: Callable[..., Any],
    sites: Sequence[AttentionSite],
    inputs: Tuple[Tensor, ...],
    additional_forward_args: Tuple[Any, ...] = (),
) -> List[Tensor]:
    """Every site's post-softmax attention (N, heads, tokens, tokens), recomputed from
    the queries and keys that one forward pass without gradients recorded (any mask or
    position bias included; fused attention left on).

    Raises ``ValueError`` for sites without the all-queries hooks or whose tokens attend
    in separate groups (Swin's windows): no one token-by-token matrix exists there.
    """
    with torch.no_grad(), record_attention(sites, None) as recorder:
        forward_func(*inputs, *additional_forward_args)
    matrices = []
    for site, record in zip(sites, recorder.gather(), strict=True):
        if record.q.shape[1] != 1:
            raise ValueError(
                f"{site.name} attends within {record.q.shape[1]} separate windows; "
                "there is no token-by-token attention matrix to roll out"
            )
        matrices.append(full_attention(record.q, record.k, record.scale, record.bias)[:, 0])
    return matrices


def _all_queries(
    record: QueryAttention, grad_z: Tensor, grid_size: Tuple[int, int], signed: bool
) -> Tensor:
    """One site's relevance in the all-queries mode, prefix tokens then the grid."""
    batch, groups, heads, tokens, head_dim = record.v.shape
    grad = grad_z.to(record.v.device).reshape(batch, groups, tokens, heads, head_dim)
    weights = channel_weights(grad.transpose(2, 3), signed)
    relevance = all_queries_relevance(
        record.q, record.k, record.v, record.scale, record.bias, weights
    )
    prefix, patches = record.layout(relevance, grid_size)
    patches = spread_to_grid(patches, grid_size)
    return torch.cat([prefix, patches.flatten(1)], dim=1)
