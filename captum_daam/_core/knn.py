"""Cosine k-nearest-neighbour search over a features matrix, a chunk at a time.

The search never forms the full queries x rows similarity matrix: it walks the rows
``chunk_size`` at a time (and the queries ``query_chunk`` at a time) keeping a running
top-k, so memory is ``O(query_chunk * chunk_size)`` however many rows there are.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError

#: Default rows and queries per step: at most 256 x 65536 similarities (64 MiB in
#: float32) exist at any time.
DEFAULT_CHUNK_SIZE = 65536
DEFAULT_QUERY_CHUNK = 256


def similarity_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The widest of ``dtypes``, at least float32: the dtype similarities are computed in."""
    result = torch.float32
    for dtype in dtypes:
        result = torch.promote_types(result, dtype)
    return result


def l2_normalise(features: Tensor) -> Tensor:
    """Rows of ``features`` scaled to unit L2 norm, in at least float32 (zero rows stay 0)."""
    return F.normalize(features.to(similarity_dtype(features.dtype)), p=2, dim=-1, eps=1e-12)


@torch.no_grad()
def top_k_cosine(
    rows: Tensor,
    queries: Tensor,
    k: int,
    row_labels: Optional[Tensor] = None,
    query_labels: Optional[Tensor] = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
) -> Tuple[Tensor, Tensor]:
    """The ``k`` rows most cosine-similar to every query, by a chunked running top-k.

    Args:
        rows: L2-normalised rows to search, (M, D); the search runs on their device.
        queries: Query features, (N, D), any scale (normalised here).
        k: Neighbours per query, ``1 <= k <= M``.
        row_labels: Class of every row, (M,); needed with ``query_labels``.
        query_labels: Optional class per query, (N,): each query only sees the rows of
            its class; where the class has fewer than ``k`` rows the missing neighbours
            have similarity ``-inf`` and index -1.
        chunk_size: Rows per step.
        query_chunk: Queries per step.

    Returns:
        ``(similarities, indices)``, each (N, k) on the rows' device, sorted by
        decreasing similarity (ties broken as ``torch.topk`` breaks them); similarities
        in :func:`similarity_dtype` of the queries and the rows.

    Example::

        >>> rows = l2_normalise(torch.randn(1000, 64))
        >>> sims, idx = top_k_cosine(rows, torch.randn(3, 64), k=5, chunk_size=256)
    """
    if chunk_size < 1 or query_chunk < 1:
        raise InvalidInputError("chunk_size and query_chunk must be positive")
    device = rows.device
    dtype = similarity_dtype(queries.dtype, rows.dtype)
    q_all = l2_normalise(queries.detach().to(device, dtype))
    if query_labels is not None:
        if row_labels is None:
            raise InvalidInputError("query_labels restrict the search by class: pass row_labels")
        query_labels = query_labels.to(device, torch.long).reshape(-1)
        if query_labels.shape[0] != q_all.shape[0]:
            raise InvalidInputError(
                f"labels must give one class per query ({q_all.shape[0]}), got "
                f"{query_labels.shape[0]}"
            )
    sims_out, idx_out = [], []
    for q_start in range(0, q_all.shape[0], query_chunk):
        q = q_all[q_start : q_start + query_chunk]
        want = None if query_labels is None else query_labels[q_start : q_start + query_chunk]
        best_s = torch.empty(q.shape[0], 0, dtype=dtype, device=device)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=device)
        for start in range(0, rows.shape[0], chunk_size):
            chunk = rows[start : start + chunk_size].to(dtype)
            sims = (chunk @ q.T).T  # (queries, rows); faster on CPU than q @ chunk.T
            if want is not None and row_labels is not None:
                other = row_labels[start : start + chunk_size][None, :] != want[:, None]
                sims.masked_fill_(other, float("-inf"))
            s, i = sims.topk(min(k, sims.shape[1]), dim=1)
            s = torch.cat([best_s, s], dim=1)
            i = torch.cat([best_i, i + start], dim=1)
            best_s, pos = s.topk(min(k, s.shape[1]), dim=1)
            best_i = i.gather(1, pos)
        if want is not None:
            best_i = best_i.masked_fill(torch.isneginf(best_s), -1)
        sims_out.append(best_s)
        idx_out.append(best_i)
    return torch.cat(sims_out), torch.cat(idx_out)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_QUERY_CHUNK",
    "l2_normalise",
    "similarity_dtype",
    "top_k_cosine",
]
