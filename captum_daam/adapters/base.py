"""The interface between DAAM and a model family.

Everything DAAM needs to know about an architecture lives behind these two classes:

* an :class:`AttentionSite` describes one attention layer that the readout token attends
  through: where the value vectors and the attention output before the projection (``Z``)
  live, and how to recompute the readout row of its post-softmax attention;
* a :class:`ModelAdapter` finds the sites of a model, knows its prefix tokens (class,
  distillation, register tokens), and maps patch tokens back to the image grid.

The method itself (:mod:`captum_daam._core`) never looks inside a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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


class ModelAdapter(ABC):
    """Architecture knowledge for one model family.

    Subclasses implement :meth:`matches` and the constructor; everything else is derived.
    """

    #: Short human-readable name of the family, used in error messages and results.
    family: str = ""
    #: What the family covers, listed in the error raised for unsupported models.
    description: str = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    @abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether this adapter handles ``model`` (the unwrapped module)."""

    @property
    @abstractmethod
    def sites(self) -> Sequence[AttentionSite]:
        """All attention layers the readout token attends through, input side first."""

    @property
    @abstractmethod
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens (class, distillation, registers)."""

    @property
    @abstractmethod
    def readout_tokens(self) -> Dict[str, int]:
        """Readout tokens that can be explained, by name, e.g. ``{"cls": 0, "dist": 1}``.
        The first entry is the default; empty for models without one (Swin, GAP ViTs)."""

    def readout_token_index(self, token: Optional[str] = None) -> int:
        """Index of the readout token named ``token`` (``None``: the default one).

        Raises ``ValueError`` naming the choices for an unknown name, and for a model
        without readout tokens.
        """
        tokens = self.readout_tokens
        if not tokens:
            raise ValueError(
                f"{type(self.model).__name__} has no readout token (it pools over tokens)"
            )
        if token is None:
            return next(iter(tokens.values()))
        if token not in tokens:
            raise ValueError(
                f"token {token!r} is not a readout token of this model; choose one of "
                f"{sorted(tokens)}"
            )
        return tokens[token]

    @property
    def readout_refusal(self) -> Optional[str]:
        """Why the readout (class-token) mode does not explain this model's prediction,
        naming the fix; ``None`` where it does. Models without a class token, or pooled
        over all tokens, are explained in the all-queries mode instead."""
        return None

    @property
    def all_queries_refusal(self) -> Optional[str]:
        """Why the all-queries mode is not available, or ``None`` where it is."""
        missing = [site.name for site in self.sites if site.install_queries is None]
        if missing:
            return (
                f"the all-queries mode is not available for {self.family} layers "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                "see docs/models.md"
            )
        return None

    @abstractmethod
    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """Patch grid (rows, columns) for an input of ``image_size`` (height, width).

        Raises ``ValueError`` naming the fix when the model cannot take that size.
        """

    @property
    def in_chans(self) -> Optional[int]:
        """Input channels the model expects, or ``None`` when unknown."""
        return None

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of the model's head: 0 for a headless backbone, ``None`` if unknown."""
        return None

    def features(self, model: nn.Module, *inputs: object) -> Tensor:
        """The embedding self-supervised DAAM explains: one feature vector per image.

        Used by :class:`~captum_daam.SelfSupervisedDAAM` and
        :meth:`~captum_daam.MemoryBank.build` when no ``feature_fn`` is given. It should be
        read out from the readout token that DAAM decomposes (the class token).

        Args:
            model: The module to run: this adapter's model or, under ``DataParallel``,
                its replica on one device (so use ``model``, not ``self.model``).
            *inputs: The images (N, C, H, W), then any additional forward arguments.

        Returns:
            Features (N, D), differentiable with respect to the model's activations.
        """
        raise NotImplementedError(
            f"the {self.family or type(self).__name__} adapter does not define the "
            "feature embedding of its models; pass feature_fn=lambda model, x: ... "
            "returning (N, D) class-token features to SelfSupervisedDAAM and "
            "MemoryBank.build"
        )

    def logits(self, output: object) -> object:
        """The (N, classes) logits in the model's output, for the supervised score.

        The default returns ``output`` unchanged (timm models return the logits tensor).
        Adapters for models that return a structured output (Hugging Face's
        ``ImageClassifierOutput``) override it to pick the logits out; anything that is
        not a logits tensor is passed through, so the score's own checks still apply.

        Args:
            output: What the model's forward returned.
        """
        return output

    def sites_for(self, layers: Optional[Sequence[nn.Module]]) -> List[AttentionSite]:
        """The sites of ``layers`` (attention modules), or all sites when ``None``."""
        if layers is None:
            return list(self.sites)
        by_module = {id(site.module): site for site in self.sites}
        chosen = []
        for layer in layers:
            site = by_module.get(id(layer))
            if site is None:
                names = ", ".join(site.name for site in self.sites)
                raise ValueError(
                    f"layer {type(layer).__name__} is not an attention module of this "
                    f"{self.family} model that the readout token attends through; pass "
                    f"attention modules such as model.blocks[-1].attn (known: {names})"
                )
            chosen.append(site)
        order = {id(site.module): i for i, site in enumerate(self.sites)}
        return sorted(chosen, key=lambda site: order[id(site.module)])

