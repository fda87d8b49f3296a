"""An explicit, slow reference for the all-queries mode, independent of the package.

Per example, every attention module's output is recomputed with the full attention
matrix (textbook formula, ``explicit_attention.py``) and substituted for the module's
output, so the gradient of the score is taken at that explicit ``Z`` (every row). Then
the three-index decomposition ``S[i, j, c] = A[h(c), i, j] V[h(c), j, d(c)]`` is formed
in full (``reference_helpers.py``), checked to sum over ``j`` to ``Z[i, c]``, and
weighted row by row: ``R[j] = sum_i sum_c w(G[i, c]) S[i, j, c]``.
Swin window tokens are put back on the image grid with explicit coordinate loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from explicit_attention import Explicit, Store, swin_attention, timm_attention
from reference_helpers import (
    ReferenceMaps,
    channel_weights,
    class_gradients,
    maps_and_relevance,
    per_head_decomposition,
)


class AllQueriesReference(ReferenceMaps):
    """``token_relevance``: (N, B, P + rows * cols); P = 0 for Swin."""


def _relevance(store: Store, grad: Tensor, group: int, signed: bool) -> Tensor:
    """Explicit three-index decomposition of one group (the image, or one Swin window)
    of a block: returns R (T,)."""
    attn, v = store["attn"][group].detach(), store["v"][group].detach()
    z, grad = store["z"][group].detach(), grad[group].detach()
    s = per_head_decomposition(attn, v)  # (T, T, C)
    tol = 1e-9 if v.dtype == torch.float64 else 1e-4
    torch.testing.assert_close(
        s.sum(dim=1),
        z,
        rtol=tol,  # completeness
        atol=tol * float(z.abs().max()),
    )
    w = channel_weights(grad, signed)  # (T, C)
    return torch.einsum("ic,ijc->j", w, s)


def _per_example(
    model: nn.Module,
    modules: list[nn.Module],
    explicit: Explicit,
    images: Tensor,
    target: Sequence[int] | None,
    block_relevance: Callable[[int, Store, Tensor], Tensor],
) -> tuple[Tensor, list[int]]:
    """Relevance (N, B, T) of every image and block, ``block_relevance(block, store,
    grad)`` of the explicit run's store and gradient; the explained classes."""
    rels, targets = [], []
    for n in range(images.shape[0]):
        run = class_gradients(
            model, modules, explicit, images[n : n + 1], None if target is None else target[n]
        )
        rels.append(
            torch.stack(
                [block_relevance(b, s, g) for b, (s, g) in enumerate(zip(run.stores, run.grads))]
            )
        )
        targets.append(run.target)
    return torch.stack(rels), targets


def reference_vit(
    model: nn.Module,
    images: Tensor,
    target: Sequence[int] | None = None,
    signed: bool = False,
) -> AllQueriesReference:
    """All-queries DAAM of a timm VisionTransformer (with or without class token)."""
    modules = [block.attn for block in model.blocks]
    grid = tuple(model.patch_embed.grid_size)
    prefix = model.num_prefix_tokens
    rel, targets = _per_example(
        model,
        modules,
        timm_attention,
        images,
        target,
        lambda b, store, grad: _relevance(store, grad, 0, signed),
    )
    return AllQueriesReference(**maps_and_relevance(rel, targets, prefix, grid))


def _swin_to_grid(
    rel: Tensor, block: nn.Module, stage_hw: tuple[int, int], grid: tuple[int, int]
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
    target: Sequence[int] | None = None,
    signed: bool = False,
) -> AllQueriesReference:
    """All-queries DAAM of a timm Swin Transformer (V1)."""
    blocks = [block for stage in model.layers for block in stage.blocks]
    modules = [block.attn for block in blocks]
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    shapes: list[tuple[int, int]] = []
    probe = [
        b.register_forward_pre_hook(lambda m, a: shapes.append(tuple(a[0].shape[1:3])))
        for b in blocks
    ]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for h in probe:
            h.remove()

    def block_relevance(b: int, store: Store, grad: Tensor) -> Tensor:
        windows = torch.stack(
            [_relevance(store, grad, w, signed) for w in range(store["z"].shape[0])]
        )
        return _swin_to_grid(windows, blocks[b], shapes[b], grid).flatten()

    rel, targets = _per_example(model, modules, swin_attention, images, target, block_relevance)
    return AllQueriesReference(**maps_and_relevance(rel, targets, 0, grid))
