"""Captum-facing attribution classes."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ._core.flow import ScoreFn, relevance_flow
from ._core.inputs import check_inputs, require_gradients
from ._core.maps import accumulate, block_maps
from ._core.targets import class_scores, target_tensor
from .adapters import eager_model, explanation_pass, get_adapter, model_lock
from .errors import InvalidInputError, UnsupportedModelError
from .result import DAAMFlow

Inputs = Union[Tensor, Tuple[Tensor, ...]]

#: The two decompositions: the readout token's row (the paper) or every query row.
QUERY_MODES = ("readout", "all")


class _DAAMBase(LayerAttribution, GradientAttribution):
    """Machinery shared by the supervised and self-supervised explainers."""

    #: Whether channel weights are the signed gradient (else its positive part).
    _signed_weights: bool = False

    def __init__(
        self,
        model: nn.Module,
        layer: Optional[Union[nn.Module, Sequence[nn.Module]]] = None,
        device_ids: Optional[List[int]] = None,
        queries: Optional[str] = None,
        forward_func: Optional[Callable[..., Any]] = None,
    ) -> None:
        """``forward_func`` is what Captum runs (default: ``model``); the
        self-supervised explainer passes the model's feature forward."""
        self.adapter = get_adapter(model)
        # Hooks and compiled graphs do not mix: a compiled model runs as its eager one.
        forward_func = eager_model(model) if forward_func is None else forward_func
        layers = [layer] if isinstance(layer, nn.Module) else layer
        self.sites = self.adapter.sites_for(layers)
        if not self.sites:
            raise InvalidInputError("no attention layers to explain: pass at least one layer")
        self.queries = self._query_mode(queries)
        LayerAttribution.__init__(
            self, forward_func, [site.module for site in self.sites], device_ids
        )
        GradientAttribution.__init__(self, forward_func)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @property
    def layer_names(self) -> Tuple[str, ...]:
        """Qualified names of the explained attention modules, input side first."""
        return tuple(site.name for site in self.sites)

    def _query_mode(self, queries: Optional[str]) -> str:
        """The decomposition to use: ``queries`` checked against what the model allows,
        or, for ``None``, the readout mode where it explains the prediction."""
        if queries is not None and queries not in QUERY_MODES:
            raise InvalidInputError(
                f"queries must be one of {QUERY_MODES} or None, got {queries!r}"
            )
        readout_refusal = self.adapter.readout_refusal
        if readout_refusal is None and not self.adapter.readout_tokens:
            readout_refusal = f"{self.adapter.family} models have no readout token"
        queries_refusal = self.adapter.all_queries_refusal
        if queries is None:
            queries = "readout" if readout_refusal is None else "all"
            if queries_refusal is not None and readout_refusal is not None:
                raise UnsupportedModelError(f"{readout_refusal}; and {queries_refusal}")
        if queries == "readout" and readout_refusal is not None:
            raise UnsupportedModelError(readout_refusal)
        if queries == "all" and queries_refusal is not None:
            raise UnsupportedModelError(queries_refusal)
        return queries

    def _token_index(self, token: Optional[str]) -> Optional[int]:
        if self.queries == "all":
            if token is not None:
                raise InvalidInputError(
                    f"token={token!r} selects a readout token, but this explainer uses "
                    "every query (queries='all'); leave token=None or create it with "
                    "queries='readout'"
                )
            return None
        return self.adapter.readout_token_index(token)

    def _check_inputs(self, inputs: Inputs) -> Tuple[Tuple[Any, ...], Tuple[int, int]]:
        """The inputs as a tuple, validated, and the patch grid of the images."""
        inputs_tuple, grid = check_inputs(inputs, self.adapter)
        require_gradients("DAAM")
        return inputs_tuple, grid

    def _flow(
        self,
        inputs_tuple: Tuple[Any, ...],
        grid: Tuple[int, int],
        score_fn: ScoreFn,
        additional_forward_args: Optional[object],
        token: Optional[str],
        record: Dict[str, Tensor],
    ) -> DAAMFlow:
        """Run DAAM once; ``score_fn`` must fill ``record`` with targets and scores."""
        token_index = self._token_index(token)
        if self.adapter.model.training:
            warnings.warn(
                "the model is in training mode: dropout makes DAAM maps random; call "
                "model.eval() first",
                stacklevel=3,
            )
        with explanation_pass(self.adapter.model):
            relevance = relevance_flow(
                self.forward_func,
                self.sites,
                inputs_tuple,
                score_fn,
                token_index,
                additional_forward_args=additional_forward_args,
                signed_weights=self._signed_weights,
                device_ids=self.device_ids,
                grid_size=grid,
            )
        maps = block_maps(relevance, self.adapter.num_prefix_tokens, grid)
        return DAAMFlow(
            block_maps=maps,
            accumulated=accumulate(maps),
            targets=record["targets"],
            scores=record["scores"],
            token_relevance=relevance,
            layer_names=self.layer_names,
            num_prefix_tokens=self.adapter.num_prefix_tokens,
            token_index=token_index,
            input_size=(int(inputs_tuple[0].shape[-2]), int(inputs_tuple[0].shape[-1])),
            queries=self.queries,
        )


class DAAM(_DAAMBase):
    r"""Dynamic Accumulated Attention Maps (Liao, Gao, Zhang, arXiv 2503.14640).

    DAAM shows how a Vision Transformer reaches its decision block by block. For every
    block ``b`` the class-token row of the attention output before the projection,
    ``Z_b[cls]``, is decomposed over the tokens it attends to: ``S_b = a0_b (x) V_b``
    (``a0_b`` the class-token attention row per head, ``V_b`` the values), so that
    ``S_b`` summed over tokens is ``Z_b[cls]``. The channels are weighted by
    ``ReLU(C_b)``, ``C_b = d logit / d Z_b[cls]``, giving the block map
    ``L_b = ReLU(sum_c ReLU(C_b)_c S_b[patch, c])`` on the patch grid, and the
    accumulated map ``D_b = L_1 + ... + L_b``.

    All blocks and the whole batch take one forward and one backward pass. The class
    row of the attention is recomputed from the model's own ``qkv`` output (q/k-norm and
    masks applied), without forming the full attention matrix, so fused attention
    stays on and the model is left exactly as it was.

    Args:
        model: A supported Vision Transformer classifier: timm ``VisionTransformer``
            with a class token (``vit_*``, ``deit_*``, distilled DeiT, register models,
            DINO / DINOv2 architectures with a head), CaiT, XCiT, BEiT, EVA-02, or a
            Hugging Face ViT / DeiT / DINOv2 classifier. May be wrapped in
            ``DataParallel`` or compiled (``torch.compile(model)`` or
            ``model.compile()``): a compiled model is explained as its eager model, with
            equal maps; the compiled graph is not used for the explanation and nothing
            is compiled. See docs/models.md.
        layer: ``None`` explains every block whose attention the class token reads out
            through. An attention module (e.g. ``model.blocks[-1].attn``) or a list of
            them restricts DAAM to those blocks; maps accumulate over the chosen ones.
        device_ids: Device ids for a ``DataParallel`` model given as a plain forward
            function, as in Captum's layer methods.
        queries: ``"readout"``: decompose the readout (class) token's row of every
            attention, the paper's DAAM. ``"all"``: the all-queries mode for models
            read out by pooling over tokens (``global_pool='avg'`` ViTs, Swin, BEiT / EVA
            by default): every row ``i`` of ``Z_b`` is decomposed and weighted by its own
            gradient, ``L_b[j] = ReLU(sum_i sum_c ReLU(G_b[i, c]) A_b[i, j] V_b[j, c])``
            with ``G_b = d logit / d Z_b``; the full attention is recomputed one block at
            a time after the backward pass. ``None`` (default) picks ``"readout"`` where
            the model is read out from a class token, else ``"all"``. See
            docs/method.md.

    Calls from several threads are safe: the explanations of one model run one after
    another (:func:`captum_daam.model_lock`), each equal to the same call made alone.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: Optional[Union[nn.Module, Sequence[nn.Module]]] = None,
        device_ids: Optional[List[int]] = None,
        queries: Optional[str] = None,
    ) -> None:
        super().__init__(model, layer, device_ids, queries)
        if self.adapter.num_classes == 0:
            raise UnsupportedModelError(
                f"{type(self.adapter.model).__name__} has no classifier head "
                "(num_classes=0), so there is no class score to explain; use "
                "SelfSupervisedDAAM with a memory bank, or attach a head"
            )

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        return_flow: bool = False,
        token: Optional[str] = None,
    ) -> Union[Tensor, DAAMFlow]:
        r"""Explain a batch of images.

        Args:
            inputs: Images (N, C, H, W), preprocessed as the model expects, or a tuple
                whose first element is the images (further elements are passed to the
                model as positional arguments, Captum-style).
            target: Classes to explain, as Captum accepts them for a classifier: an
                int, a list of N ints, or an integer tensor of 1 or N elements.
                ``None`` (default) explains each example's **predicted** class, taken
                from the same forward pass (no extra forward).
            additional_forward_args: Extra positional arguments for the model's
                forward, after the inputs.
            return_flow: ``False`` returns the final map ``D_B``; ``True`` returns a
                :class:`~captum_daam.DAAMFlow` with every block's map ``L_b``, the
                accumulated maps ``D_b``, the targets used and the scores.
            token: Readout token to explain: ``"cls"`` (default) or, for a distilled
                DeiT, ``"dist"`` (the distillation token). Must be ``None`` in the
                all-queries mode.

        Returns:
            *Tensor* or *DAAMFlow*:
            - **attributions** (*Tensor*): the final accumulated map ``D_B``, shape
              (N, 1, rows, cols) on the patch grid, unnormalised, in float32 (float64
              for float64 models). Upsample with ``LayerAttribution.interpolate`` as
              for ``LayerGradCam``, or ``captum_daam.upsample``.
            - **flow** (*DAAMFlow*), with ``return_flow=True``.

        Examples::

            >>> import timm, torch
            >>> from captum_daam import DAAM
            >>> model = timm.create_model("deit_tiny_patch16_224").eval()  # random weights
            >>> daam = DAAM(model)
            >>> images = torch.randn(2, 3, 224, 224)
            >>> daam.attribute(images).shape                # the final map D_B
            torch.Size([2, 1, 14, 14])
            >>> flow = daam.attribute(images, target=[3, 7], return_flow=True)
            >>> flow.accumulated.shape                      # D_b after each of 12 blocks
            torch.Size([2, 12, 14, 14])
        """
        inputs_tuple, grid = self._check_inputs(inputs)
        images = inputs_tuple[0]
        targets = target_tensor(target, images.shape[0], images.device)
        record: Dict[str, Tensor] = {}

        def score_fn(output: Any) -> Tensor:
            scores, used = class_scores(self.adapter.logits(output), targets)
            record["targets"], record["scores"] = used, scores.detach()
            return scores

        flow = self._flow(inputs_tuple, grid, score_fn, additional_forward_args, token, record)
        return flow if return_flow else flow.final


__all__ = ["DAAM", "QUERY_MODES", "model_lock"]
