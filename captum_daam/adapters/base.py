"""The interface between DAAM and a model family.

Everything DAAM needs to know about an architecture lives behind these two classes:

* an :class:`AttentionSite` (defined in :mod:`captum_daam._core.sites`, re-exported here)
  describes one attention layer that the readout token attends
  through: where the value vectors and the attention output before the projection (``Z``)
  live, and how to recompute the readout row of its post-softmax attention;
* a :class:`ModelAdapter` finds the sites of a model, knows its prefix tokens (class,
  distillation, register tokens), and maps patch tokens back to the image grid.

The method itself (:mod:`captum_daam._core`) never looks inside a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .._core.sites import AttentionSite, QueryAttention, QuerySink, RowSink, TokenLayout
from ..errors import InvalidInputError, UnsupportedModelError

#: Re-exported: the site types are defined in :mod:`captum_daam._core.sites`.
__all__ = [
    "AttentionSite",
    "ModelAdapter",
    "QueryAttention",
    "QuerySink",
    "RowSink",
    "TokenLayout",
]

#: A model or submodule that an adapter reads by attribute (``blocks``, ``patch_embed``,
#: ``num_heads``, ``qkv``, ...): attributes that ``nn.Module``'s type does not declare
#: (its ``__getattr__`` is typed ``Tensor | Module``), so adapters hold such modules as this.
AnyModule = Any


class ModelAdapter(ABC):
    """Architecture knowledge for one model family.

    Subclasses implement :meth:`matches` and the constructor; everything else is derived.
    """

    #: Short human-readable name of the family, used in error messages and results.
    family: str = ""
    #: What the family covers, listed in the error raised for unsupported models.
    description: str = ""

    def __init__(self, model: nn.Module) -> None:
        self.model: AnyModule = model

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
            raise InvalidInputError(
                f"{type(self.model).__name__} has no readout token (it pools over tokens)"
            )
        if token is None:
            return next(iter(tokens.values()))
        if token not in tokens:
            raise InvalidInputError(
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

    @property
    def block_names(self) -> List[str]:
        """The qualified name of the block holding each site, input side first: the
        element of the nearest enclosing ``ModuleList`` / ``Sequential`` (``blocks.3.attn``
        gives ``blocks.3``). What a model-randomisation check re-initialises block by
        block."""
        modules = dict(self.model.named_modules())
        names = []
        for site in self.sites:
            parts = site.name.split(".")
            block = site.name.rsplit(".", 1)[0] if "." in site.name else site.name
            for end in range(len(parts) - 1, 0, -1):
                parent = modules.get(".".join(parts[: end - 1]) if end > 1 else "")
                if isinstance(parent, (nn.ModuleList, nn.Sequential)):
                    block = ".".join(parts[:end])
                    break
            names.append(block)
        return names

    @property
    def token_attention_refusal(self) -> Optional[str]:
        """Why the model has no token-by-token attention matrix per block (what attention
        rollout and Chefer's gradient-weighted rollout multiply), or ``None`` where it
        has one. The all-queries hooks are needed to recompute it."""
        return self.all_queries_refusal

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
    def input_dtype(self) -> Optional[torch.dtype]:
        """The floating dtype the model's first layer computes in, which images must
        have outside ``torch.autocast``; ``None`` for models that convert their inputs
        themselves (Hugging Face's), or when unknown."""
        return None

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of the model's head: 0 for a headless backbone, ``None`` if unknown."""
        return None

    @property
    def classifier(self) -> Optional[nn.Module]:
        """The classifier head, when it has parameters; ``None`` for a headless model.

        What a model-randomisation sanity check re-initialises first.
        """
        return None

    @property
    def gradcam_layer(self) -> nn.Module:
        """The layer Grad-CAM-style methods should use: the last block's input norm,
        whose output tokens are the last block's input (``blocks[-1].norm1`` in timm).

        Raises :class:`~captum_daam.UnsupportedModelError` where the family has none.
        """
        raise UnsupportedModelError(
            f"the grad-cam methods run on the last block's norm1, which "
            f"{type(self.model).__name__} does not have; use a timm ViT"
        )

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
        raise UnsupportedModelError(
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
                raise InvalidInputError(
                    f"layer {type(layer).__name__} is not an attention module of this "
                    f"{self.family} model that the readout token attends through; pass "
                    f"attention modules such as model.blocks[-1].attn (known: {names})"
                )
            chosen.append(site)
        order = {id(site.module): i for i, site in enumerate(self.sites)}
        return sorted(chosen, key=lambda site: order[id(site.module)])
