"""An explicit, slow reference for DAAM, independent of the package's implementation.

Per example, every attention module's output is recomputed with the full N x N attention
matrix (the textbook formula, no fused kernel) and substituted for the module's output,
so the gradient of the score is taken at that explicit ``Z``. The decomposition ``S`` is
then formed in full and weighted channel by channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn


@dataclass
class ReferenceFlow:
    block_maps: Tensor  # (N, B, rows, cols)
    accumulated: Tensor  # (N, B, rows, cols)
    token_relevance: Tensor  # (N, B, T)
    targets: Tensor  # (N,)
    z_rows: Tensor  # (N, B, C): readout row of Z per block
    weights: Tensor  # (N, B, C): channel weights per block
    decomposition: List[Tensor]  # per example: (B, T, C) explicit S
    logits: Tensor  # (N, classes) of the model with explicit attention


def _explicit_attention(module: nn.Module, x: Tensor, store: dict) -> Tensor:
    batch, tokens, _ = x.shape
    heads, head_dim = module.num_heads, module.head_dim
    qkv = module.qkv(x).reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    attn = ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (1, H, T, T)
    z = (attn @ v).transpose(1, 2).reshape(batch, tokens, heads * head_dim)
    store["attn"], store["v"], store["z"] = attn, v, z
    return module.proj_drop(module.proj(module.norm(z)))


def reference_daam(
    model: nn.Module,
    attention_modules: Sequence[nn.Module],
    images: Tensor,
    target: Optional[Sequence[int]] = None,
    token_index: int = 0,
    num_prefix_tokens: int = 1,
    grid_size: Optional[tuple] = None,
    signed: bool = False,
) -> ReferenceFlow:
    results = {k: [] for k in ("maps", "rel", "targets", "z", "w", "s", "logits")}
    for i in range(images.shape[0]):
        stores = [dict() for _ in attention_modules]

        def make_hook(store):
            def hook(module, args, output):
                return _explicit_attention(module, args[0], store)

            return hook

        handles = [
            m.register_forward_hook(make_hook(s))
            for m, s in zip(attention_modules, stores)
        ]
        try:
            with torch.enable_grad():
                logits = model(images[i : i + 1])
                t = int(logits.argmax()) if target is None else int(target[i])
                zs = [s["z"] for s in stores]
                grads = torch.autograd.grad(logits[0, t], zs)
        finally:
            for h in handles:
                h.remove()
        rels, zrows, ws, ss = [], [], [], []
        for store, grad in zip(stores, grads):
            a0 = store["attn"][0, :, token_index, :].detach()  # (H, T)
            v = store["v"][0].detach()  # (H, T, hd)
            heads, tokens, head_dim = v.shape
            # S[j, (h, d)] = a0[h, j] * v[h, j, d], channels head-major
            s = torch.zeros(tokens, heads * head_dim, dtype=v.dtype)
            for h in range(heads):
                s[:, h * head_dim : (h + 1) * head_dim] = a0[h][:, None] * v[h]
            c = grad[0, token_index].detach()
            w = c if signed else c.clamp(min=0)
            rels.append(s @ w)
            zrows.append(store["z"][0, token_index].detach())
            ws.append(w)
            ss.append(s)
        rel = torch.stack(rels)  # (B, T)
        results["rel"].append(rel)
        results["z"].append(torch.stack(zrows))
        results["w"].append(torch.stack(ws))
        results["s"].append(torch.stack(ss))
        results["targets"].append(t)
        results["logits"].append(logits.detach()[0])
    rel = torch.stack(results["rel"])  # (N, B, T)
    maps = rel[:, :, num_prefix_tokens:].clamp(min=0)
    if grid_size is not None:
        maps = maps.reshape(*maps.shape[:2], *grid_size)
    return ReferenceFlow(
        block_maps=maps,
        accumulated=maps.cumsum(dim=1),
        token_relevance=rel,
        targets=torch.tensor(results["targets"]),
        z_rows=torch.stack(results["z"]),
        weights=torch.stack(results["w"]),
        decomposition=results["s"],
        logits=torch.stack(results["logits"]),
    )
