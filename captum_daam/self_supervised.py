"""Self-supervised DAAM: importance weights from a memory bank instead of a class score.

A self-supervised ViT (DINO, DINOv2, any backbone without a classifier) has no class
score to decompose. Following the DAAM paper (Liao, Gao, Zhang, arXiv 2503.14640), the
score is replaced by ``<w, f>``: ``f`` is the image's class-token feature and ``w`` a
dimension-wise importance vector taken from the image's nearest neighbours in a labelled
:class:`~captum_daam.MemoryBank`. Everything after the score (the decomposition, the
channel weights, the maps) is the supervised machinery of :class:`~captum_daam.DAAM`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from captum._utils.typing import TargetType
from captum.log import log_usage
from torch import Tensor, nn

from ._core.importance import importance_weights, knn_vote, support_among_neighbours
from ._core.knn import l2_normalise
from ._core.targets import target_tensor
from .attr import Inputs, _DAAMBase
from .errors import InvalidInputError, InvalidInputTypeError, NonFiniteScoresError
from .features import FeatureFn, feature_forward
from .memory_bank import MemoryBank
from .result import DAAMFlow


@dataclass
class SelfSupervisedFlow(DAAMFlow):
    """:class:`~captum_daam.DAAMFlow` with what the memory bank said about each image.

    ``targets`` are the classes explained (the voted class where ``target=None``) and
    ``scores`` the explained score ``<w, f>``. In addition:

    Attributes:
        voted_class: The weighted k-NN vote, (N,) long, whatever the target.
        vote_share: Share of the vote weight ``sum exp(s/T)`` that went to the voted
            class, (N,) in (0, 1]: low values mean the neighbours disagree.
        neighbour_indices: Bank rows of the k nearest neighbours, (N, k), nearest first.
        neighbour_similarities: Their cosine similarities, (N, k). Low similarities are
            the paper's failure signature: the bank holds nothing like the image.
        neighbour_labels: Their labels, (N, k).
        support_indices: Bank rows whose features defined the importance weights, (N, k),
            nearest first, padded with -1: the neighbours of the explained class among
            the k nearest or, for an explicit target absent from them, the k nearest
            entries of that class.
        importance: The importance weights ``w`` (min-max normalised), (N, D).
    """

    voted_class: Tensor
    vote_share: Tensor
    neighbour_indices: Tensor
    neighbour_similarities: Tensor
    neighbour_labels: Tensor
    support_indices: Tensor
    importance: Tensor

    @property
    def explains_vote(self) -> Tensor:
        """Whether each example's explained class is its own k-NN vote, (N,) bool."""
        return self.targets == self.voted_class


def class_support(
    memory_bank: MemoryBank,
    features: Tensor,
    classes: Tensor,
    neighbour_indices: Tensor,
    neighbour_labels: Tensor,
) -> Tensor:
    """The bank entries that define each example's importance weights, (N, k).

    Among the k nearest neighbours, those whose label is the example's class (nearest
    first). Where none is (only possible for an explicit target), the k nearest bank
    entries of that class (fewer if the class has fewer). Padded with -1.

    Args:
        memory_bank: The bank the neighbours come from.
        features: The examples' features, (N, D) (searched again only for examples
            whose class is absent from their neighbours).
        classes: The class each example explains, (N,).
        neighbour_indices: Bank rows of the k nearest neighbours, (N, k), nearest first.
        neighbour_labels: Their labels, (N, k).

    Returns:
        *Tensor*: bank rows, (N, k) long, nearest first, padded with -1.

    Example::

        >>> sims, idx = bank.search(features, k=20)
        >>> support = class_support(bank, features, classes, idx, bank.labels[idx])
    """
    support, absent = support_among_neighbours(neighbour_indices, neighbour_labels, classes)
    if bool(absent.any()):
        k = neighbour_indices.shape[1]
        _, own = memory_bank.search(features[absent], k, labels=classes[absent])
        support[absent] = own.to(support.device)
    return support


class SelfSupervisedDAAM(_DAAMBase):
    r"""DAAM for self-supervised Vision Transformers, with a memory bank.

    Without a classifier there is no class score to explain. As in the DAAM paper
    (Liao, Gao, Zhang, arXiv 2503.14640), the score is built from the image's
    neighbours in a labelled :class:`~captum_daam.MemoryBank` of L2-normalised features
    ``z``:

    1. ``f`` = the backbone's class-token feature of the image, ``f̂ = f / ||f||``;
    2. the ``k`` bank entries most cosine-similar to ``f̂`` vote for their labels with
       weights ``exp(s / T)``; the class with the largest vote is the *voted class*;
    3. the neighbours of the explained class (the voted class, or ``target``) give
       ``u_d = mean_j f̂_d z_{j,d}`` and ``w = (u - min u) / (max u - min u)`` (all ones
       when ``u`` is constant);
    4. the explained score is ``<w, f>`` on the un-normalised ``f``, ``w`` held constant.

    From there everything is supervised DAAM: in each block the class-token row of the
    attention output ``Z_b[cls]`` is decomposed over tokens, ``S_b = a0_b (x) V_b``, its
    channels weighted by ``C_b = d<w, f> / d Z_b[cls]`` - **signed**, as the reference
    implementation does (``relu_weights=True`` takes ``ReLU(C_b)`` as in the supervised
    case) - giving ``L_b = ReLU(sum_c C_b,c S_b[patch, c])`` and ``D_b = L_1 + ... + L_b``.
    One forward and one backward per batch; the search is one chunked top-k.

    Args:
        model: A supported Vision Transformer (any model DAAM supports, e.g. timm
            DINO / DINOv2 architectures, ``vit_*``, ``deit_*``; see docs/models.md),
            with or without a head (the head is not used), possibly in
            ``DataParallel``.
        memory_bank: Features of a labelled dataset from the **same** backbone and
            feature function (:meth:`MemoryBank.build`). It may live on another device
            than the model.
        k: Neighbours per image (default 20), at most ``len(memory_bank)``.
        temperature: ``T`` of the vote weights ``exp(s / T)`` (default 0.07).
        layer: ``None`` explains every block; an attention module or a list of them
            restricts DAAM to those blocks, as for :class:`DAAM`.
        feature_fn: ``feature_fn(model, images, *additional_forward_args) -> (N, D)``;
            default: the adapter's class-token embedding, for timm
            ``model.forward_head(model.forward_features(x), pre_logits=True)``. It must
            be differentiable and should read out the class token that DAAM decomposes.
        relu_weights: ``False`` (default) uses the channel coefficients signed, as the
            reference implementation; ``True`` takes their positive part.
        device_ids: As for :class:`DAAM`.
        queries: As for :class:`DAAM`: ``"all"`` decomposes every query row, weighted
            by its own signed gradient, for backbones pooled over tokens.
    """

    def __init__(
        self,
        model: nn.Module,
        memory_bank: MemoryBank,
        k: int = 20,
        temperature: float = 0.07,
        layer: Optional[Union[nn.Module, Sequence[nn.Module]]] = None,
        feature_fn: Optional[FeatureFn] = None,
        relu_weights: bool = False,
        device_ids: Optional[List[int]] = None,
        queries: Optional[str] = None,
    ) -> None:
        # Captum runs the feature forward, which returns the features f, not logits (a
        # head is never run); its training mode is the model's (FeatureForward.training).
        super().__init__(
            model, layer, device_ids, queries, forward_func=feature_forward(model, feature_fn)
        )
        if not isinstance(memory_bank, MemoryBank):
            raise InvalidInputTypeError(
                f"memory_bank must be a captum_daam.MemoryBank, got "
                f"{type(memory_bank).__name__}; build one with MemoryBank.build(model, "
                "loader) or MemoryBank(features, labels)"
            )
        memory_bank.check_k(k)
        if not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
            raise InvalidInputError(f"temperature must be a positive number, got {temperature!r}")
        self.memory_bank = memory_bank
        self.k = k
        self.temperature = float(temperature)
        self.model = model  # as given; Captum's forward_func is its feature forward
        self._signed_weights = not relu_weights

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        return_flow: bool = False,
        token: Optional[str] = None,
    ) -> Union[Tensor, SelfSupervisedFlow]:
        r"""Explain a batch of images through their neighbours in the memory bank.

        Args:
            inputs: Images (N, C, H, W), preprocessed as the model expects, or a tuple
                whose first element is the images (further elements are passed to the
                model, Captum-style).
            target: Classes to explain, as for :meth:`DAAM.attribute` (an int, a list of
                N ints, an integer tensor of 1 or N elements), labels of the memory
                bank. ``None`` (default) explains each image's **voted** class. An
                explicit class uses its neighbours among the k nearest; where it has
                none there, its k nearest bank entries (see
                :attr:`SelfSupervisedFlow.support_indices`). A class with no entry in
                the bank raises ``ValueError``.
            additional_forward_args: Extra positional arguments for the feature
                function (timm: ``forward_features``), after the inputs.
            return_flow: ``False`` returns the final map ``D_B``; ``True`` returns a
                :class:`SelfSupervisedFlow`: the per-block and accumulated maps, the
                explained classes and scores ``<w, f>``, the voted class, the
                neighbours and their similarities, and the importance weights.
            token: Readout token to explain (``"cls"``, default).

        Returns:
            *Tensor* or *SelfSupervisedFlow*:
            - **attributions** (*Tensor*): the final accumulated map ``D_B``, shape
              (N, 1, rows, cols) on the patch grid, unnormalised, in float32 (float64
              for float64 models).
            - **flow** (*SelfSupervisedFlow*), with ``return_flow=True``.

        Examples::

            >>> import timm, torch
            >>> from captum_daam import MemoryBank, SelfSupervisedDAAM
            >>> model = timm.create_model("vit_small_patch16_224.dino").eval()
            >>> bank = MemoryBank.build(model, loader)   # labelled (images, labels)
            >>> explainer = SelfSupervisedDAAM(model, bank, k=20, temperature=0.07)
            >>> images = torch.randn(2, 3, 224, 224)
            >>> final = explainer.attribute(images)        # (2, 1, 14, 14)
            >>> flow = explainer.attribute(images, return_flow=True)
            >>> flow.voted_class, flow.neighbour_similarities[:, 0]
        """
        inputs_tuple, grid = self._check_inputs(inputs)
        images = inputs_tuple[0]
        targets = target_tensor(target, images.shape[0], images.device)
        if targets is not None:
            self.memory_bank.check_classes(targets)
        record: Dict[str, Tensor] = {}
        extras: Dict[str, Tensor] = {}

        def score_fn(output: Any) -> Tensor:
            return self._score(output, targets, record, extras)

        flow = self._flow(inputs_tuple, grid, score_fn, additional_forward_args, token, record)
        values: Dict[str, Any] = {f.name: getattr(flow, f.name) for f in fields(DAAMFlow)}
        values.update(extras)  # the fields SelfSupervisedFlow adds
        result = SelfSupervisedFlow(**values)
        return result if return_flow else result.final

    def _score(
        self,
        features: Any,
        targets: Optional[Tensor],
        record: Dict[str, Tensor],
        extras: Dict[str, Tensor],
    ) -> Tensor:
        """``<w, f>`` per example, ``w`` from the memory bank (constant)."""
        bank = self.memory_bank
        if not isinstance(features, Tensor):
            raise InvalidInputTypeError(
                f"the feature function returned {type(features).__name__}, not a tensor "
                "of features (N, D)"
            )
        bank.check_features(features, "the model's features")
        if not bool(torch.isfinite(features.detach()).all()):
            raise NonFiniteScoresError(
                "the model produced non-finite features for these inputs; check the "
                "inputs and, in float16, try bfloat16 or float32"
            )
        with torch.no_grad():
            f = features.detach()
            similarities, indices = bank.search(f, self.k)
            labels = bank.labels[indices.to(bank.device)].to(f.device)
            voted, share = knn_vote(similarities, labels, self.temperature)
            classes = voted if targets is None else targets.to(f.device)
            support = class_support(bank, f, classes, indices, labels)
            valid = support >= 0
            z = bank.features[support.clamp(min=0).to(bank.device)]
            normalised = l2_normalise(f)
            w = importance_weights(normalised, z.to(f.device, normalised.dtype), valid)
        scores = (w * features.to(w.dtype)).sum(dim=1)
        record["targets"], record["scores"] = classes, scores.detach()
        extras.update(
            voted_class=voted,
            vote_share=share,
            neighbour_indices=indices,
            neighbour_similarities=similarities,
            neighbour_labels=labels,
            support_indices=support,
            importance=w,
        )
        return scores


__all__ = [
    "SelfSupervisedDAAM",
    "SelfSupervisedFlow",
    "class_support",
    "importance_weights",
    "knn_vote",
]
