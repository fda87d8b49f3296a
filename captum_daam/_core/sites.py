"""The records that attention sites hand to the method, and the site description.

The method (:mod:`captum_daam._core`) reads models only through these types; the
adapters (:mod:`captum_daam.adapters`) build them. Defined here, at the bottom of the
house, so every import points down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

#: Called by a site once per forward (and per device under ``DataParallel``) with the
#: readout row of the attention ``a0`` of shape (N, heads, tokens) and the values ``v`` of
#: shape (N, heads, tokens, head_dim). Both are detached.
RowSink = Callable[[Tensor, Tensor], None]

#: ``layout(relevance, grid)``: token relevance of one site, (N, groups, tokens), to
#: ``(prefix, patches)``: the prefix tokens' relevance (N, P) and the patch tokens' on the
#: site's own grid (N, rows_b, cols_b), which is the model's patch grid ``grid`` or a
#: coarser one (hierarchical models) that divides it.
TokenLayout = Callable[[Tensor, Tuple[int, int]], Tuple[Tensor, Tensor]]


@dataclass
class QueryAttention:
    """What one attention layer computed in a forward pass, for the all-queries mode.

    Enough to recompute its full post-softmax attention after the backward pass, one
    layer at a time: ``A = softmax(scale * q k^T + bias)``, ``Z = A v``. Tokens are split
    into ``groups`` that attend only among themselves (Swin windows; 1 group for a ViT).

    Attributes:
        q: Queries after any q-norm or rotary embedding, (N, groups, heads, tokens, head_dim).
        k: Keys, same shape.
        v: Values, same shape.
        scale: The logit scale.
        bias: Additive logit bias broadcastable to (N, groups, heads, tokens, tokens)
            (relative position bias, shifted-window mask, attention mask), or ``None``.
        layout: Maps relevance (N, groups, tokens) back to the image grid.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    scale: float
    bias: Optional[Tensor]
    layout: TokenLayout

    @classmethod
    def cat(cls, parts: Sequence["QueryAttention"]) -> "QueryAttention":
        """The records of several devices (``DataParallel``) as one batch."""
        first = parts[0]
        device = first.v.device

        def cat(name: str) -> Tensor:
            return torch.cat([getattr(p, name).to(device) for p in parts])

        bias = first.bias
        if bias is not None and bias.shape[0] != 1:
            bias = torch.cat([p.bias.to(device) for p in parts])  # type: ignore[union-attr]
        return cls(cat("q"), cat("k"), cat("v"), first.scale, bias, first.layout)


#: Called by a site once per forward (and per device) with its :class:`QueryAttention`.
QuerySink = Callable[[QueryAttention], None]


@dataclass(frozen=True)
class AttentionSite:
    """One attention layer as DAAM sees it.

    Args:
        name: Qualified module name inside the model (``"blocks.3.attn"``).
        module: The attention module itself; this is what users pass as ``layer``.
        z_module: The module whose *input* is ``Z``, the attention output before the
            projection, tokens x (heads * head_dim), heads concatenated head-major.
        num_heads: Number of attention heads.
        head_dim: Channels per head.
        install: ``install(token_index, sink)`` registers the forward hooks that recompute
            the readout row of the attention and hand it, with the values, to ``sink``.
            Returns the hook handles; the caller removes them.
        z_row: Row of ``Z`` that holds the readout token, when it is not the readout
            token's index (class-attention layers that compute only the class row).
        install_queries: ``install_queries(sink)`` registers the hooks of the all-queries
            mode, which hand a :class:`QueryAttention` to ``sink``; ``None`` where the
            layer has no all-queries decomposition (class-attention layers).
    """

    name: str
    module: nn.Module
    z_module: nn.Module
    num_heads: int
    head_dim: int
    install: Callable[[int, RowSink], List[RemovableHandle]] = field(repr=False)
    z_row: Optional[int] = None
    install_queries: Optional[Callable[[QuerySink], List[RemovableHandle]]] = field(
        default=None, repr=False
    )

    def readout_row_of_z(self, token_index: int) -> int:
        """Row of ``Z`` whose gradient weights the channels for ``token_index``."""
        return token_index if self.z_row is None else self.z_row


__all__ = ["AttentionSite", "QueryAttention", "QuerySink", "RowSink", "TokenLayout"]
