"""Grad-CAM on the patch tokens of a Vision Transformer layer, with Captum's own
``LayerGradCam``.

Captum's ``LayerGradCam`` on a transformer block treats the *tokens* as channels (its
output is (N, tokens, D)) and returns (N, 1, D), not a spatial map. Here the layer's
patch tokens are laid out on the patch grid (:func:`~captum_daam.baselines.tokens_to_grid`)
and ``LayerGradCam`` runs on that view: (N, 1, rows, cols), as for a CNN.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from captum._utils.common import _format_additional_forward_args
from captum._utils.typing import TargetType
from captum.attr import LayerGradCam
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ..adapters import eager_model, get_adapter, unwrap_model
from ..errors import InvalidInputError
from ._base import Inputs, check_inputs, explanation_pass, require_gradients, resolve_targets
from .grid import grid_to_tokens, tokens_to_grid


class _PatchGrid(nn.Module):
    """The identity, on the patch tokens seen as (N, D, rows, cols).

    Not part of the model: :class:`ViTLayerGradCam` calls it from a temporary hook, so
    that Captum's ``LayerGradCam`` has a layer whose output is a spatial feature map.
    """

    def forward(self, grid: Tensor) -> Tensor:
        return grid


class ViTLayerGradCam(LayerAttribution, GradientAttribution):
    r"""Captum's ``LayerGradCam`` on the patch tokens of a Vision Transformer layer.

    Grad-CAM weights each channel of a feature map by the mean of its gradient over the
    spatial positions and sums the weighted channels. On a transformer block Captum
    takes the tokens for channels and returns (N, 1, D). Here the layer's output tokens
    (or its input tokens) are laid out on the patch grid, (N, D, rows, cols), prefix
    tokens left out, and Captum's ``LayerGradCam`` runs on that view: channel weights are
    the gradient averaged over the patches, the map is their weighted sum of the token
    features, (N, 1, rows, cols).

    The grid view is inserted by a forward hook on ``layer`` that exists only during
    :meth:`attribute`; it returns the very same values (the prefix tokens and the
    patches, concatenated back), so the model computes exactly what it computes without
    it.

    For a model that reads out its class token (timm ``global_pool='token'``), the output
    of the *last* block reaches the logits only through the class token, so the gradient
    on its patch tokens is zero and so is the map. Use the last block's input instead:
    its ``norm1``, which the adapter names, ``ViTLayerGradCam(model,
    get_adapter(model).gradcam_layer)`` (the common choice, as in pytorch-grad-cam), or
    the last block with ``attribute_to_layer_input=True``.

    Args:
        model: A Vision Transformer supported by :func:`captum_daam.adapters.get_adapter`
            whose layers hold token sequences (N, tokens, D).
        layer: A module of ``model`` whose output (or input) is the token sequence
            (N, prefix + rows * cols, D): a block or its ``norm1``
            (``get_adapter(model).gradcam_layer``).
        attribute_to_layer_input: Explain the layer's input tokens instead of its output.

    Example::

        >>> import timm, torch
        >>> from captum_daam import ViTLayerGradCam
        >>> from captum_daam.adapters import get_adapter
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()
        >>> gradcam = ViTLayerGradCam(model, get_adapter(model).gradcam_layer)
        >>> maps = gradcam.attribute(torch.randn(2, 3, 224, 224), target=[3, 7])
        >>> maps.shape
        torch.Size([2, 1, 14, 14])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module,
        attribute_to_layer_input: bool = False,
    ) -> None:
        self.adapter = get_adapter(model)
        if not any(module is layer for module in unwrap_model(model).modules()):
            raise InvalidInputError(
                f"layer {type(layer).__name__} is not a module of this model; pass one of "
                "its modules, e.g. get_adapter(model).gradcam_layer"
            )
        model = eager_model(model)  # hooks and compiled graphs do not mix
        LayerAttribution.__init__(self, model, layer)
        GradientAttribution.__init__(self, model)
        self.attribute_to_layer_input = attribute_to_layer_input
        self._patch_grid = _PatchGrid()
        self._grid: Optional[Tuple[int, int]] = None
        self.grad_cam = LayerGradCam(self._forward_with_grid_view, self._patch_grid)

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    def _grid_view(self, tokens: object) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 3:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens)
            raise InvalidInputError(
                f"layer {type(self.layer).__name__} "
                f"{'takes' if self.attribute_to_layer_input else 'returns'} {shape}, not a "
                "token sequence (N, tokens, D); choose a block or a norm of the model"
            )
        assert self._grid is not None
        prefix = self.adapter.num_prefix_tokens
        grid = self._patch_grid(tokens_to_grid(tokens, prefix, self._grid))
        return grid_to_tokens(grid, tokens[:, :prefix])

    def _forward_with_grid_view(self, *args: Any) -> Any:
        layer = self.layer
        if self.attribute_to_layer_input:

            def pre_hook(module: nn.Module, inputs: Tuple[Any, ...]) -> Tuple[Any, ...]:
                return (self._grid_view(inputs[0]), *inputs[1:])

            handle = layer.register_forward_pre_hook(pre_hook)
        else:

            def hook(module: nn.Module, inputs: Tuple[Any, ...], output: Any) -> Tensor:
                return self._grid_view(output)

            handle = layer.register_forward_hook(hook)
        try:
            return self.adapter.logits(self.forward_func(*args))
        finally:
            handle.remove()

    @log_usage()
    def attribute(
        self,
        inputs: Inputs,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        relu_attributions: bool = True,
        attr_dim_summation: bool = True,
    ) -> Tensor:
        r"""Grad-CAM maps on the patch grid.

        Args:
            inputs: Images (N, C, H, W), or a tuple whose first element is the images.
            target: Classes to explain, as Captum takes them for a classifier. ``None``
                (default) explains each example's predicted class (one extra forward
                pass without gradients to find it).
            additional_forward_args: Extra positional arguments for the model.
            relu_attributions: Apply a ReLU to the map, as the original Grad-CAM
                (default ``True``; Captum's own default is ``False``).
            attr_dim_summation: Sum the weighted channels (default). ``False`` returns
                the weighted channels, (N, D, rows, cols).

        Returns:
            *Tensor* of **attributions**: (N, 1, rows, cols) on the patch grid
            ((N, D, rows, cols) with ``attr_dim_summation=False``), detached, in the
            layer's dtype. Upsample with :func:`captum_daam.upsample`, or put it in
            input space with :func:`captum_daam.to_input_space`.
        """
        require_gradients("ViTLayerGradCam")
        inputs_tuple, grid = check_inputs(inputs, self.adapter)
        extra = _format_additional_forward_args(additional_forward_args)
        # The grid view reads self._grid: set and cleared under the model's lock, so one
        # instance shared by threads never sees another call's grid.
        with explanation_pass(self.forward_func):
            self._grid = grid
            try:
                targets = resolve_targets(
                    self.forward_func, self.adapter, inputs_tuple, target, extra or ()
                )
                maps = self.grad_cam.attribute.__wrapped__(
                    self.grad_cam,
                    inputs_tuple,
                    target=targets,
                    additional_forward_args=extra,
                    attribute_to_layer_input=False,
                    relu_attributions=relu_attributions,
                    attr_dim_summation=attr_dim_summation,
                )
            finally:
                self._grid = None
        return maps.detach()


__all__ = ["ViTLayerGradCam"]
