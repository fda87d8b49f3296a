"""What the explicit, slow references share, written once.

``reference.py`` (the readout row), ``ssl_reference.py`` (self-supervised) and
``all_queries_reference.py`` (every query row) all substitute a textbook attention
(``explicit_attention.py``) for every attention module, take the gradient of a score at
every block's explicit ``Z``, form the decomposition ``S`` head by head, weight it
channel by channel (ReLU on the weights unless signed), and turn the token relevance
into block maps (ReLU) and their accumulation over blocks. Those steps live here; each
reference keeps its own score and bookkeeping. Nothing here uses the package: a
reference that called the code under test could not catch its bugs.

Example::

    run = class_gradients(model, [b.attn for b in model.blocks], timm_attention, image)
    s, w, relevance = readout_block(run.stores[0], run.grads[0], row=0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from explicit_attention import Explicit, Store


@contextmanager
def explicit_forward(modules: Sequence[nn.Module], explicit: Explicit) -> Iterator[list[Store]]:
    """Within the block, every module's output is ``explicit(module, args, kwargs, store)``.

    Yields one store per module, which receives its ``attn``, ``v`` and ``z`` on every
    forward; the hooks are removed on the way out, however it is left.
    """
    stores: list[Store] = [{} for _ in modules]

    def make_hook(store: Store):
        def hook(module, args, kwargs, output):
            return explicit(module, args, kwargs, store)

        return hook

    handles = [
        m.register_forward_hook(make_hook(s), with_kwargs=True) for m, s in zip(modules, stores)
    ]
    try:
        yield stores
    finally:
        for handle in handles:
            handle.remove()


def z_gradients(score: Tensor, stores: Sequence[Store]) -> tuple[Tensor, ...]:
    """The gradient of ``score`` at every block's explicit ``Z``."""
    return torch.autograd.grad(score, [store["z"] for store in stores])


@dataclass
class ClassRun:
    stores: list[Store]  # per block: attn, v, z of the one image
    grads: tuple[Tensor, ...]  # per block: d score / d Z, shaped like z
    target: int  # the explained class
    logits: Tensor  # (1, classes), detached


def class_gradients(
    model: nn.Module,
    modules: Sequence[nn.Module],
    explicit: Explicit,
    image: Tensor,
    target: int | None = None,
    logits_of: Callable[[Any], Tensor] = lambda output: output,
    forward_args: tuple = (),
) -> ClassRun:
    """One image (batch of 1) through ``model`` with explicit attention, and the gradient
    of its class score (``target``, or the predicted class) at every block's ``Z``."""
    with explicit_forward(modules, explicit) as stores, torch.enable_grad():
        logits = logits_of(model(image, *forward_args))
        t = int(logits.argmax()) if target is None else int(target)
        grads = z_gradients(logits[0, t], stores)
    return ClassRun(stores, grads, t, logits.detach())


def per_head_decomposition(attn: Tensor, v: Tensor) -> Tensor:
    """``S[..., j, (h, d)] = attn[h, ..., j] * v[h, j, d]``, channels head-major, a head at
    a time. ``attn``: (H, T) one query row, or (H, Q, T) every row; ``v``: (H, T, hd).
    Returns (T, H * hd), or (Q, T, H * hd)."""
    heads, _, head_dim = v.shape
    s = torch.zeros(*attn.shape[1:], heads * head_dim, dtype=v.dtype)
    for h in range(heads):
        s[..., h * head_dim : (h + 1) * head_dim] = attn[h][..., None] * v[h]
    return s


def channel_weights(grad: Tensor, signed: bool = False) -> Tensor:
    """The gradient as channel weights: ReLU'd, or as it is when ``signed``."""
    return grad if signed else grad.clamp(min=0)


def readout_block(
    store: Store, grad: Tensor, row: int, signed: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One block of one image, readout row ``row`` of its ``Z``: the decomposition
    ``S`` (T, C), the weights ``w`` (C,) and the token relevance ``S @ w`` (T,)."""
    a0 = store["attn"][0, :, row, :].detach()  # (H, T)
    v = store["v"][0].detach()  # (H, T, hd)
    s = per_head_decomposition(a0, v)
    w = channel_weights(grad[0, row].detach(), signed)
    return s, w, s @ w


@dataclass
class ReferenceMaps:
    """What every reference returns; each reference adds its own intermediates."""

    block_maps: Tensor  # (N, B, rows, cols): prefix tokens dropped, ReLU
    accumulated: Tensor  # (N, B, rows, cols): running sum over the blocks
    token_relevance: Tensor  # (N, B, T) before the ReLU
    targets: Tensor  # (N,) the explained classes


def maps_and_relevance(
    relevance: Tensor,
    targets: Sequence[int],
    num_prefix_tokens: int,
    grid_size: tuple[int, int] | None = None,
) -> dict[str, Tensor]:
    """The fields of :class:`ReferenceMaps` from the token relevance (N, B, T) and the
    explained classes: the block maps drop the prefix tokens, take the ReLU and lie on
    the patch grid (N, B, rows, cols) when ``grid_size`` is given."""
    maps = relevance[:, :, num_prefix_tokens:].clamp(min=0)
    if grid_size is not None:
        maps = maps.reshape(*maps.shape[:2], *grid_size)
    return {
        "block_maps": maps,
        "accumulated": maps.cumsum(dim=1),
        "token_relevance": relevance,
        "targets": torch.tensor(targets),
    }
