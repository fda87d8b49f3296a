"""An explicit, slow reference for DAAM (the readout row), independent of the package.

Per example, every attention module's output is recomputed the textbook way
(``explicit_attention.py``: the full attention matrix, no fused kernel) and substituted
for the module's output, so the gradient of the score is taken at that explicit ``Z``.
The decomposition ``S`` of the readout row is then formed in full and weighted channel
by channel (``reference_helpers.py``).

Example::

    ref = reference_daam(model, [b.attn for b in model.blocks], images, grid_size=(4, 4))
    ref.block_maps  # (N, B, 4, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from explicit_attention import Explicit, timm_attention
from reference_helpers import (
    ReferenceMaps,
    class_gradients,
    maps_and_relevance,
    readout_block,
)


@dataclass
class ReferenceFlow(ReferenceMaps):
    z_rows: Tensor  # (N, B, C): readout row of Z per block
    weights: Tensor  # (N, B, C): channel weights per block
    decomposition: list[Tensor]  # per example: (B, T, C) explicit S
    logits: Tensor  # (N, classes) of the model with explicit attention


def reference_daam(
    model: nn.Module,
    attention_modules: Sequence[nn.Module],
    images: Tensor,
    target: Sequence[int] | None = None,
    token_index: int = 0,
    num_prefix_tokens: int = 1,
    grid_size: tuple | None = None,
    signed: bool = False,
    explicit: Explicit = timm_attention,
    z_row: int | None = None,
    logits_of: Callable[[Any], Tensor] = lambda output: output,
    forward_args: tuple = (),
) -> ReferenceFlow:
    """DAAM the slow way.

    Args:
        explicit: the textbook attention of ``attention_modules`` (timm's ``Attention`` by
            default; see ``explicit_attention.py`` for the other families).
        z_row: the row of Z (and of the attention) holding the readout token when the
            module computes fewer queries than tokens (class attention); ``token_index``
            by default.
        logits_of: the logits from the model's output (Hugging Face models).
        forward_args: further positional arguments of the model's forward.

    Returns:
        The maps, the relevance before the ReLU, and every intermediate, per example.
    """
    row = token_index if z_row is None else z_row
    results = {k: [] for k in ("rel", "targets", "z", "w", "s", "logits")}
    for i in range(images.shape[0]):
        run = class_gradients(
            model,
            attention_modules,
            explicit,
            images[i : i + 1],
            None if target is None else target[i],
            logits_of,
            forward_args,
        )
        blocks = [
            readout_block(store, grad, row, signed) for store, grad in zip(run.stores, run.grads)
        ]
        results["rel"].append(torch.stack([rel for _, _, rel in blocks]))  # (B, T)
        results["z"].append(torch.stack([store["z"][0, row].detach() for store in run.stores]))
        results["w"].append(torch.stack([w for _, w, _ in blocks]))
        results["s"].append(torch.stack([s for s, _, _ in blocks]))
        results["targets"].append(run.target)
        results["logits"].append(run.logits[0])
    return ReferenceFlow(
        **maps_and_relevance(
            torch.stack(results["rel"]), results["targets"], num_prefix_tokens, grid_size
        ),
        z_rows=torch.stack(results["z"]),
        weights=torch.stack(results["w"]),
        decomposition=results["s"],
        logits=torch.stack(results["logits"]),
    )
