"""Every block's attention and the gradient of the score with respect to it, from DAAM's
single forward and backward pass.

Per head the attention output is ``Z = A V`` (``Z`` the input of the projection), so

    ∇A[h, i, j] = sum_d G[i, h, d] V[h, j, d],        G = d score / d Z,

and :func:`~captum_daam._core.flow.site_gradients` (all-queries records, fused attention
left on) gives ``G`` and the queries, keys and values that ``A`` is recomputed from
(:func:`~captum_daam._core.decomposition.full_attention`). No attention matrix is kept
by the model or retained in the autograd graph.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .decomposition import full_attention
from .flow import ScoreFn, site_gradients
from .sites import AttentionSite


def attention_and_gradients(
    forward_func: Callable[..., Any],
    sites: Sequence[AttentionSite],
    inputs: Tuple[Tensor, ...],
    score_fn: ScoreFn,
    additional_forward_args: Optional[object] = None,
    device_ids: Optional[List[int]] = None,
) -> List[Tuple[Tensor, Tensor]]:
    """``(A_b, d score / d A_b)`` of every site, (N, heads, T, T) each, in site order.

    Args:
        forward_func: The model (or a function of the inputs).
        sites: The attention sites, with the all-queries hooks.
        inputs: The inputs of ``forward_func``.
        score_fn: The model's output -> the score per example (N,) to differentiate.
        additional_forward_args: Extra positional arguments for ``forward_func``.
        device_ids: ``DataParallel`` device ids (default: ``forward_func.device_ids``).

    Returns:
        One ``(attention, gradient)`` pair per site, in :func:`compute_dtype`
        (float32, float64 for float64 models).

    Raises:
        ValueError: for a site whose tokens attend within separate windows (Swin): there
            is no one token-by-token attention matrix there.
    """
    records, grads = site_gradients(
        forward_func, sites, inputs, score_fn, None, additional_forward_args, device_ids
    )
    out = []
    for site, record, grad_z in zip(sites, records, grads, strict=True):
        batch, groups, heads, tokens, head_dim = record.v.shape
        if groups != 1:
            raise ValueError(
                f"{site.name} attends within {groups} separate windows; there is no "
                "token-by-token attention matrix to weight by its gradient"
            )
        attention = full_attention(record.q, record.k, record.scale, record.bias)[:, 0]
        g = grad_z.to(record.v.device, attention.dtype).reshape(batch, tokens, heads, head_dim)
        values = record.v[:, 0].to(attention.dtype)
        gradient = torch.matmul(g.transpose(1, 2), values.transpose(-2, -1))
        out.append((attention, gradient))
    return out


__all__ = ["attention_and_gradients"]
