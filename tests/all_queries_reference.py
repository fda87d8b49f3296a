"""An explicit, slow reference for the all-queries mode, independent of the package.

Per example, every attention module's output is recomputed with the full attention
matrix (textbook formula) and substituted for the module's output, so the gradient of the
score is taken at that explicit ``Z`` (every row). Then the three-index decomposition
``S[i, j, c] = A[h(c), i, j] V[h(c), j, d(c)]`` is formed in full, checked to sum over
``j`` to ``Z[i, c]``, and weighted row by row: ``R[j] = sum_i sum_c w(G[i, c]) S[i, j, c]``.
Swin window tokens are put back on the image grid with explicit coordinate loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


@dataclass
class AllQueriesReference:
    block_maps: Tensor  # (N, B, rows, cols)
    token_relevance: Tensor  # (N, B, P + rows * cols)
    targets: Tensor


def _vit_attention(module: nn.Module, args, kwargs, store: dict) -> Tensor:
    x = args[0]
    batch, tokens, _ = x.shape
    heads, head_dim = module.num_heads, module.head_dim
    qkv = module.qkv(x).reshape(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    attn = ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    z = (attn @ v).transpose(1, 2).reshape(batch, tokens, heads * head_dim)
    store["attn"], store["v"], store["z"] = attn, v, z
    return module.proj_drop(module.proj(module.norm(z)))


def _swin_attention(module: nn.Module, args, kwargs, store: dict) -> Tensor:
    x = args[0]
    mask = kwargs.get("mask", args[1] if len(args) > 1 else None)
    windows, tokens, _ = x.shape
    heads = module.num_heads
    qkv = module.qkv(x).reshape(windows, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    index = module.relative_position_index.reshape(-1)
    bias = module.relative_position_bias_table[index].reshape(tokens, tokens, heads)
    logits = (q * module.scale) @ k.transpose(-2, -1) + bias.permute(2, 0, 1)
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.reshape(-1, nw, heads, tokens, tokens) + mask[None, :, None]
        logits = logits.reshape(windows, heads, tokens, tokens)
    attn = logits.softmax(dim=-1)
    z = (attn @ v).transpose(1, 2).reshape(windows, tokens, -1)
    store["attn"], store["v"], store["z"] = attn, v, z
    return module.proj_drop(module.proj(z))


def _relevance(attn: Tensor, v: Tensor, z: Tensor, grad: Tensor, signed: bool) -> Tensor:
    """Explicit three-index decomposition of one group: returns R (T,)."""
    heads, tokens, head_dim = v.shape
    s = torch.zeros(tokens, tokens, heads * head_dim, dtype=v.dtype)
    for h in range(heads):
        s[:, :, h * head_dim:(h + 1) * head_dim] = attn[h][:, :, None] * v[h][None]
    tol = 1e-9 if v.dtype == torch.float64 else 1e-4
    torch.testing.assert_close(s.sum(dim=1), z, rtol=tol,  # completeness
                               atol=tol * float(z.abs().max()))
    w = grad if signed else grad.clamp(min=0)  # (T, C)
    return torch.einsum("ic,ijc->j", w, s)


def _run(model, modules, explicit, image, target):
    stores = [dict() for _ in modules]

    def make_hook(store):
        return lambda module, args, kwargs, output: explicit(module, args, kwargs, store)

    handles = [m.register_forward_hook(make_hook(s), with_kwargs=True)
               for m, s in zip(modules, stores)]
    try:
        with torch.enable_grad():
            logits = model(image)
            t = int(logits.argmax()) if target is None else int(target)
            grads = torch.autograd.grad(logits[0, t], [s["z"] for s in stores])
    finally:
        for h in handles:
            h.remove()
    return stores, grads, t


def reference_vit(
    model: nn.Module,
    images: Tensor,
    target: Optional[Sequence[int]] = None,
    signed: bool = False,
) -> AllQueriesReference:
    """All-queries DAAM of a timm VisionTransformer (with or without class token)."""
    modules = [block.attn for block in model.blocks]
    grid = tuple(model.patch_embed.grid_size)
    prefix = model.num_prefix_tokens
    rels, targets = [], []
    for n in range(images.shape[0]):
        stores, grads, t = _run(model, modules, _vit_attention, images[n:n + 1],
                                None if target is None else target[n])
        rels.append(torch.stack([
            _relevance(s["attn"][0].detach(), s["v"][0].detach(), s["z"][0].detach(),
                       g[0].detach(), signed)
            for s, g in zip(stores, grads)
        ]))
        targets.append(t)
    rel = torch.stack(rels)
    maps = rel[:, :, prefix:].clamp(min=0).reshape(*rel.shape[:2], *grid)
    return AllQueriesReference(maps, rel, torch.tensor(targets))


def _swin_to_grid(
    rel: Tensor, block: nn.Module, stage_hw: Tuple[int, int], grid: Tuple[int, int]
) -> Tensor:
    """Window-token relevance (nW, T) of one image to the patch grid, by loops."""
    height, width = stage_hw
    wh, ww = block.window_size
    sh, sw = block.shift_size
    cols_w = -(-width // ww)
    stage = torch.zeros(height, width, dtype=rel.dtype)
    for w in range(rel.shape[0]):
        wr, wc = divmod(w, cols_w)
        for t in range(rel.shape[1]):
            r, c = divmod(t, ww)
            y, x = wr * wh + r, wc * ww + c  # in the shifted, padded grid
            if y < height and x < width:  # padding tokens are dropped
                stage[(y + sh) % height, (x + sw) % width] += rel[w, t]
    out = torch.zeros(grid, dtype=rel.dtype)
    fy, fx = -(-grid[0] // height), -(-grid[1] // width)
    for y in range(grid[0]):
        for x in range(grid[1]):
            out[y, x] = stage[y // fy, x // fx] / (fy * fx)
    return out


def reference_swin(
    model: nn.Module,
    images: Tensor,
    target: Optional[Sequence[int]] = None,
    signed: bool = False,
) -> AllQueriesReference:
    """All-queries DAAM of a timm Swin Transformer (V1)."""
    blocks = [block for stage in model.layers for block in stage.blocks]
    modules = [block.attn for block in blocks]
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    shapes: List[Tuple[int, int]] = []
    probe = [b.register_forward_pre_hook(
        lambda m, a: shapes.append(tuple(a[0].shape[1:3]))) for b in blocks]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for h in probe:
            h.remove()
    rels, targets = [], []
    for n in range(images.shape[0]):
        stores, grads, t = _run(model, modules, _swin_attention, images[n:n + 1],
                                None if target is None else target[n])
        per_block = []
        for block, hw, s, g in zip(blocks, shapes, stores, grads):
            windows = torch.stack([
                _relevance(s["attn"][w].detach(), s["v"][w].detach(), s["z"][w].detach(),
                           g[w].detach(), signed)
                for w in range(s["z"].shape[0])
            ])
            per_block.append(_swin_to_grid(windows, block, hw, grid).flatten())
        rels.append(torch.stack(per_block))
        targets.append(t)
    rel = torch.stack(rels)
    maps = rel.clamp(min=0).reshape(*rel.shape[:2], *grid)
    return AllQueriesReference(maps, rel, torch.tensor(targets))


Builder = Callable[[], nn.Module]
