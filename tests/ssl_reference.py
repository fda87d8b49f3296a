"""An explicit, slow reference for self-supervised DAAM, independent of the package.

Per example: the model runs with every attention recomputed from the full N x N matrix
(``reference._explicit_attention``); the feature is ``forward_head(forward_features(x),
pre_logits=True)``; the bank is normalised here and searched by brute force (a full
sort); the vote sums ``exp(s / T)`` into one bin per class, as the authors' code does;
``u`` is the mean of the explicit products ``f̂_d z_{j,d}``; the score ``<w, f>`` is
differentiated with ``torch.autograd.grad`` at the explicit ``Z`` of every block, and
the decomposition ``S`` is formed in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from reference import _explicit_attention


@dataclass
class SSLReferenceFlow:
    block_maps: Tensor  # (N, B, rows, cols)
    accumulated: Tensor  # (N, B, rows, cols)
    token_relevance: Tensor  # (N, B, T)
    targets: Tensor  # (N,) the explained classes
    voted: Tensor  # (N,)
    neighbour_indices: Tensor  # (N, k)
    neighbour_similarities: Tensor  # (N, k)
    support: List[List[int]]  # per example, the bank rows that define u, nearest first
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
    target: Optional[Sequence[int]] = None,
    signed: bool = True,
    token_index: int = 0,
    num_prefix_tokens: int = 1,
    grid_size: Optional[tuple] = None,
) -> SSLReferenceFlow:
    bank = bank_features / bank_features.norm(dim=1, keepdim=True)
    num_classes = int(bank_labels.max()) + 1
    out = {key: [] for key in ("rel", "targets", "voted", "idx", "sims", "support", "w",
                               "scores", "f")}
    for i in range(images.shape[0]):
        stores = [dict() for _ in attention_modules]

        def make_hook(store):
            def hook(module, args, output):
                return _explicit_attention(module, args[0], store)

            return hook

        handles = [m.register_forward_hook(make_hook(s)) for m, s in zip(attention_modules, stores)]
        try:
            with torch.enable_grad():
                f = model.forward_head(model.forward_features(images[i : i + 1]),
                                       pre_logits=True)[0]
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
                grads = torch.autograd.grad(score, [s["z"] for s in stores])
        finally:
            for h in handles:
                h.remove()
        rels = []
        for store, grad in zip(stores, grads):
            a0 = store["attn"][0, :, token_index, :].detach()  # (H, T)
            v = store["v"][0].detach()  # (H, T, hd)
            heads, tokens, head_dim = v.shape
            s = torch.zeros(tokens, heads * head_dim, dtype=v.dtype)
            for h in range(heads):
                s[:, h * head_dim : (h + 1) * head_dim] = a0[h][:, None] * v[h]
            c = grad[0, token_index].detach()
            rels.append(s @ (c if signed else c.clamp(min=0)))
        out["rel"].append(torch.stack(rels))
        out["targets"].append(cls)
        out["voted"].append(voted)
        out["idx"].append(nearest)
        out["sims"].append(sims[nearest])
        out["support"].append(support)
        out["w"].append(w)
        out["scores"].append(score.detach())
        out["f"].append(f.detach())
    rel = torch.stack(out["rel"])
    maps = rel[:, :, num_prefix_tokens:].clamp(min=0)
    if grid_size is not None:
        maps = maps.reshape(*maps.shape[:2], *grid_size)
    return SSLReferenceFlow(
        block_maps=maps,
        accumulated=maps.cumsum(dim=1),
        token_relevance=rel,
        targets=torch.tensor(out["targets"]),
        voted=torch.tensor(out["voted"]),
        neighbour_indices=torch.stack(out["idx"]),
        neighbour_similarities=torch.stack(out["sims"]),
        support=out["support"],
        importance=torch.stack(out["w"]),
        scores=torch.stack(out["scores"]),
        features=torch.stack(out["f"]),
    )
