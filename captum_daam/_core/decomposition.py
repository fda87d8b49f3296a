"""The decomposition module: the readout row of the attention, split over tokens.

For one attention layer with heads ``h`` and channels ``c = (h, d)`` (head-major), the
readout token ``t`` (the class token) produces the attention output row

    Z[t, (h, d)] = sum_j a0[h, j] * V[h, j, d],        a0 = softmax_j(scale * q_t . k_j + bias_j)

so ``S[j, (h, d)] = a0[h, j] * V[h, j, d]`` decomposes ``Z[t]`` over the tokens ``j``:
``S.sum(0) == Z[t]``. DAAM weights the channels of ``S`` by the importance of ``Z[t]``.

The all-queries mode (models read out by pooling over tokens) decomposes every row ``i``
of ``Z`` the same way, ``S[i, j, (h, d)] = A[h, i, j] * V[h, j, d]``, and weights each
row's channels by their own importance ``w(G[i])``, ``G = d score / d Z``:
``R[j] = sum_i sum_c w(G)[i, c] S[i, j, c]`` (see :func:`all_queries_relevance`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision DAAM computes in: float64 stays float64, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def attention_bias(
    attn_mask: Optional[Tensor],
    is_causal: bool,
    num_tokens: int,
    dtype: torch.dtype,
    device: torch.device,
    row: Optional[int] = None,
) -> Optional[Tensor]:
    """The additive bias an attention applies to its logits, for query ``row`` or all.

    ``attn_mask`` follows ``torch.nn.functional.scaled_dot_product_attention``: a boolean
    mask (``True`` = attend) or an additive float mask, broadcastable to
    (batch, heads, queries, keys). Returns a tensor broadcastable to (batch, heads, keys)
    for one ``row``, or to (batch, heads, queries, keys) for ``row=None``; ``None`` when
    nothing is masked.
    """
    bias: Optional[Tensor] = None
    if attn_mask is not None:
        mask = attn_mask if row is None else attn_mask[..., row, :]
        if mask.dtype == torch.bool:
            zeros = torch.zeros((), dtype=dtype, device=device)
            bias = torch.where(mask, zeros, torch.full_like(zeros, float("-inf")))
        else:
            bias = mask.to(dtype)
    if is_causal:
        ones = torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device)
        future = torch.triu(ones, diagonal=1)
        causal = torch.zeros(num_tokens, num_tokens, dtype=dtype, device=device)
        causal = causal.masked_fill(future, float("-inf"))
        causal = causal if row is None else causal[row]
        bias = causal if bias is None else bias + causal
    return bias


def readout_row_bias(
    attn_mask: Optional[Tensor],
    is_causal: bool,
    row: int,
    num_tokens: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Optional[Tensor]:
    """:func:`attention_bias` of query ``row``, broadcastable to (batch, heads, keys)."""
    return attention_bias(attn_mask, is_causal, num_tokens, dtype, device, row=row)


def readout_attention_row(
    q_row: Tensor, k: Tensor, scale: float, bias: Optional[Tensor] = None
) -> Tensor:
    """Post-softmax attention of one query over all keys, per head, without forming N x N.

    Args:
        q_row: Query of the readout token, (batch, heads, head_dim), after any q-norm.
        k: Keys, (batch, heads, tokens, head_dim), after any k-norm or rotary embedding.
        scale: The logit scale the attention uses (``head_dim ** -0.5`` in most models).
        bias: Optional additive bias broadcastable to (batch, heads, tokens): relative
            position bias, attention mask.

    Returns:
        ``a0``, (batch, heads, tokens), rows summing to one, in :func:`compute_dtype`.
    """
    dtype = compute_dtype(q_row.dtype)
    logits = torch.matmul(k.to(dtype), q_row.to(dtype).unsqueeze(-1)).squeeze(-1) * scale
    if bias is not None:
        logits = logits + bias
    return logits.softmax(dim=-1)


def decompose(a0: Tensor, v: Tensor) -> Tensor:
    """The explicit decomposition ``S`` of the readout row over tokens.

    Args:
        a0: Readout attention row, (batch, heads, tokens).
        v: Values, (batch, heads, tokens, head_dim).

    Returns:
        ``S``, (batch, tokens, heads * head_dim), channels head-major, so that
        ``S.sum(1)`` is the readout row of the attention output before the projection.
    """
    dtype = compute_dtype(v.dtype)
    s = a0.to(dtype).unsqueeze(-1) * v.to(dtype)  # (batch, heads, tokens, head_dim)
    batch, heads, tokens, head_dim = s.shape
    return s.permute(0, 2, 1, 3).reshape(batch, tokens, heads * head_dim)


def token_relevance(a0: Tensor, v: Tensor, weights: Tensor) -> Tensor:
    """``sum_c weights[c] * S[j, c]`` for every token ``j``, without materialising ``S``.

    Args:
        a0: Readout attention row, (batch, heads, tokens).
        v: Values, (batch, heads, tokens, head_dim).
        weights: Channel weights, (batch, heads * head_dim), head-major.

    Returns:
        Signed relevance of every token (prefix tokens included), (batch, tokens). It sums
        over tokens to ``weights . Z[readout]`` (completeness of the decomposition).
    """
    dtype = compute_dtype(v.dtype)
    batch, heads, tokens, head_dim = v.shape
    w = weights.to(dtype).reshape(batch, heads, head_dim, 1)
    value_scores = torch.matmul(v.to(dtype), w).squeeze(-1)  # (batch, heads, tokens)
    return (a0.to(dtype) * value_scores).sum(dim=1)


def full_attention(q: Tensor, k: Tensor, scale: float, bias: Optional[Tensor]) -> Tensor:
    """Post-softmax attention of every query, ``softmax(scale * q k^T + bias)``.

    Args:
        q, k: (..., tokens, head_dim), e.g. (batch, groups, heads, tokens, head_dim) as a
            :class:`~captum_daam._core.sites.QueryAttention` holds them.
        scale: Logit scale.
        bias: Additive logit bias broadcastable to the logits, or ``None``.

    Returns:
        (..., queries, keys) in :func:`compute_dtype`, rows summing to one.
    """
    dtype = compute_dtype(q.dtype)
    logits = torch.matmul(q.to(dtype), k.to(dtype).transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias.to(dtype)
    return logits.softmax(dim=-1)


def all_queries_relevance(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float,
    bias: Optional[Tensor],
    weights: Tensor,
) -> Tensor:
    """``R[j] = sum_i sum_(h,d) w[i, (h, d)] * A[h, i, j] * V[h, j, d]`` for every token.

    The full attention ``A = softmax(scale * q k^T + bias)`` of one layer is formed here
    (per group of tokens that attend among themselves), used once and dropped; the
    (queries x keys x channels) tensor ``S`` never is: ``R[j] = sum_h sum_d V[h, j, d]
    (A_h^T w_h)[j, d]``.

    Args:
        q, k, v: (batch, groups, heads, tokens, head_dim).
        scale: Logit scale.
        bias: Additive logit bias broadcastable to (batch, groups, heads, tokens, tokens),
            or ``None``.
        weights: Channel weights of every row of ``Z``, (batch, groups, heads, tokens,
            head_dim), e.g. ``ReLU(d score / d Z)``.

    Returns:
        Signed relevance (batch, groups, tokens) in :func:`compute_dtype`; it sums over
        tokens to ``sum_i weights[i] . Z[i]`` (completeness).
    """
    dtype = compute_dtype(v.dtype)
    attention = full_attention(q, k, scale, bias)  # (batch, groups, heads, queries, keys)
    pulled = torch.matmul(attention.transpose(-2, -1), weights.to(dtype))
    return (pulled * v.to(dtype)).sum(dim=(-1, 2))
