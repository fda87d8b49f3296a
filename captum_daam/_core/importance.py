"""From an image's nearest neighbours to importance weights over feature dimensions.

Self-supervised DAAM (Liao, Gao, Zhang, arXiv 2503.14640) replaces the class score by
``<w, f>``: the k nearest labelled neighbours vote for a class (:func:`knn_vote`), the
neighbours of the explained class support it (:func:`support_among_neighbours`) and
give the dimension-wise weights ``w`` (:func:`importance_weights`).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def knn_vote(similarities: Tensor, labels: Tensor, temperature: float) -> Tuple[Tensor, Tensor]:
    """Weighted k-NN vote: each neighbour votes for its label with ``exp(s / T)``.

    Args:
        similarities: Cosine similarities of the k nearest neighbours, (N, k), sorted
            in decreasing order.
        labels: Their labels, (N, k).
        temperature: ``T > 0``.

    Returns:
        ``(voted, share)``: the class with the largest total vote (N,), ties going to
        the class of the nearer neighbour, and its share of the total vote (N,).

    Example::

        >>> knn_vote(torch.tensor([[0.9, 0.8, 0.7]]), torch.tensor([[2, 5, 5]]), 0.1)
        (tensor([2]), tensor([0.6652]))
    """
    # exp((s - s_max) / T): the same argmax and shares as exp(s / T), without overflow.
    votes = torch.exp((similarities - similarities[:, :1]) / temperature)
    same = labels[:, :, None] == labels[:, None, :]  # (N, k, k)
    mass = (same * votes[:, None, :]).sum(dim=-1)  # mass of neighbour j's class
    best = mass.argmax(dim=1)  # the first maximum: the nearest neighbour of that class
    voted = labels.gather(1, best[:, None])[:, 0]
    share = mass.gather(1, best[:, None])[:, 0] / votes.sum(dim=1)
    return voted, share


def support_among_neighbours(
    neighbour_indices: Tensor, neighbour_labels: Tensor, classes: Tensor
) -> Tuple[Tensor, Tensor]:
    """The neighbours of each example's class among its k nearest, nearest first.

    Args:
        neighbour_indices: Rows of the k nearest neighbours, (N, k), nearest first.
        neighbour_labels: Their labels, (N, k).
        classes: The class each example explains, (N,).

    Returns:
        ``(support, absent)``: the rows whose label is the example's class, (N, k),
        nearest first and padded with -1; and which examples have none of them (N,)
        bool (their support must come from elsewhere).
    """
    match = neighbour_labels == classes[:, None]
    order = torch.argsort((~match).to(torch.int8), dim=1, stable=True)
    support = neighbour_indices.masked_fill(~match, -1).gather(1, order)
    return support, ~match.any(dim=1)


def importance_weights(normalised: Tensor, support_features: Tensor, valid: Tensor) -> Tensor:
    """Dimension-wise importance ``w = min-max(u)``, ``u_d = mean_j f̂_d z_{j,d}``.

    Args:
        normalised: L2-normalised query features ``f̂``, (N, D).
        support_features: Bank features ``z_j`` of the supporting neighbours, (N, k, D).
        valid: Which of the k are real neighbours (the rest is padding), (N, k) bool;
            at least one per row.

    Returns:
        ``w`` (N, D) in [0, 1]: ``(u - min u) / (max u - min u)``, all ones where ``u`` is
        constant.

    Example::

        >>> f_hat = torch.tensor([[0.6, 0.8, 0.0]])
        >>> z = torch.eye(3)[None, :2]                      # two neighbours
        >>> importance_weights(f_hat, z, torch.ones(1, 2, dtype=torch.bool))
        tensor([[0.7500, 1.0000, 0.0000]])
    """
    mask = valid.to(normalised.dtype)[:, :, None]
    products = normalised[:, None, :] * support_features * mask
    u = products.sum(dim=1) / mask.sum(dim=1)
    low = u.min(dim=1, keepdim=True).values
    span = u.max(dim=1, keepdim=True).values - low
    flat = span <= 0
    return torch.where(flat, torch.ones_like(u), (u - low) / torch.where(flat, 1, span))


__all__ = ["importance_weights", "knn_vote", "support_among_neighbours"]
