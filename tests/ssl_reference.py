"""An explicit, slow reference for self-supervised DAAM, independent of the package.

Per example: the model runs with every attention recomputed from the full N x N matrix
(``explicit_attention.timm_attention``); the feature is ``forward_head(forward_features(x),
pre_logits=True)``; the bank is normalised here and searched by brute force (a full
sort); the vote sums ``exp(s / T)`` into one bin per class, as the authors' code does;
``u`` is the mean of the explicit products ``f̂_d z_{j,d}``; the score ``<w, f>`` is
differentiated with ``torch.autograd.grad`` at the explicit ``Z`` of every block, and
the decomposition ``S`` is formed in full (``reference_helpers.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from explicit_attention import timm_attention
from reference_helpers import (
    ReferenceMaps,
    explicit_forward,
    maps_and_relevance,
    readout_block,
    z_gradients,
)


@dataclass
class SSLReferenceFlow(ReferenceMaps):
    voted: Tensor  # (N,)
    neighbour_indices: Tensor  # (N, k)
    neighbour_similarities: Tensor  # (N, k)
    support: list[list[int]]  # per example, the bank rows that define u, nearest first
    importance: Tensor  # (N, D) w
    scores: Tensor  # (N,) <w, f>
    features: Tensor  # (N, D) f


def reference_ssl_daam(
    model: nn.Module,
    attention_modules: Sequence[nn.Module],
    images: Tensor,
    bank_features: Tensor,
    bank_labels: Tensor,
    k: int,
    temperature: float,
    target: Sequence[int] | None = None,
    signed: bool = True,
    token_index: int = 0,
    num_prefix_tokens: int = 1,
    grid_size: tuple | None = None,
) -> SSLReferenceFlow:
    bank = bank_features / bank_features.norm(dim=1, keepdim=True)
    num_classes = int(bank_labels.max()) + 1
    out = {
        key: [] for key in ("rel", "targets", "voted", "idx", "sims", "support", "w", "scores", "f")
    }
    for i in range(images.shape[0]):
        with explicit_forward(attention_modules, timm_attention) as stores, torch.enable_grad():
            f = model.forward_head(model.forward_features(images[i : i + 1]), pre_logits=True)[0]
            f_hat = (f / f.norm()).detach()
            sims = bank @ f_hat  # (M,)
            order = torch.sort(sims, descending=True, stable=True).indices
            nearest = order[:k]
            votes = torch.zeros(num_classes, dtype=sims.dtype)
            for j in nearest.tolist():
                votes[bank_labels[j]] += torch.exp(sims[j] / temperature)
            voted = int(votes.argmax())
            cls = voted if target is None else int(target[i])
            support = [j for j in nearest.tolist() if int(bank_labels[j]) == cls]
            if not support:  # explicit target absent from the k nearest
                support = [j for j in order.tolist() if int(bank_labels[j]) == cls][:k]
            products = torch.stack([f_hat * bank[j] for j in support])
            u = products.mean(dim=0)
            if u.max() > u.min():
                w = (u - u.min()) / (u.max() - u.min())
            else:
                w = torch.ones_like(u)
            score = (w * f).sum()
            grads = z_gradients(score, stores)
        rels = [
            readout_block(store, grad, token_index, signed)[2] for store, grad in zip(stores, grads)
        ]
        out["rel"].append(torch.stack(rels))
        out["targets"].append(cls)
        out["voted"].append(voted)
        out["idx"].append(nearest)
        out["sims"].append(sims[nearest])
        out["support"].append(support)
        out["w"].append(w)
        out["scores"].append(score.detach())
        out["f"].append(f.detach())
    return SSLReferenceFlow(
        **maps_and_relevance(torch.stack(out["rel"]), out["targets"], num_prefix_tokens, grid_size),
        voted=torch.tensor(out["voted"]),
        neighbour_indices=torch.stack(out["idx"]),
        neighbour_similarities=torch.stack(out["sims"]),
        support=out["support"],
        importance=torch.stack(out["w"]),
        scores=torch.stack(out["scores"]),
        features=torch.stack(out["f"]),
    )
