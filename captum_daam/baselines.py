"""Baselines to put beside DAAM: Grad-CAM on a ViT's patch tokens, attention rollout.

Neither is part of DAAM. They exist so that comparisons are fair:

* Captum's ``LayerGradCam`` on a transformer block treats the *tokens* as channels (its
  output is (N, tokens, D)) and returns (N, 1, D), not a spatial map.
  :func:`tokens_to_grid` lays the patch tokens out on the patch grid, and
  :class:`ViTLayerGradCam` runs Captum's own ``LayerGradCam`` on that grid view of a
  block's tokens: (N, 1, rows, cols), as for a CNN.
* :func:`attention_rollout` (Abnar & Zuidema, 2020) multiplies the head-averaged
  attention matrices, with the residual connection, through the blocks.

Architecture knowledge (prefix tokens, patch grid) comes from the model's adapter
(:func:`captum_daam.adapters.get_adapter`).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch
from captum._utils.common import (
    _format_additional_forward_args,
    _format_tensor_into_tuples,
)
from captum._utils.typing import TargetType
from captum.attr import LayerGradCam
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ._core.flow import attention_matrices
from ._core.inputs import check_images
from ._core.targets import target_tensor
from .adapters import get_adapter, unwrap_model
from .errors import UnsupportedModelError

Inputs = Union[Tensor, Tuple[Tensor, ...]]


def tokens_to_grid(
    tokens: Tensor, num_prefix_tokens: int, grid_size: Tuple[int, int]
) -> Tensor:
    """The patch tokens of a token sequence as a feature map on the patch grid.

    Args:
        tokens: A token sequence (N, prefix + rows * cols, D), patches row-major after
            the prefix tokens (class, distillation, registers), as timm ViTs hold them.
        num_prefix_tokens: Tokens before the patches (``adapter.num_prefix_tokens``).
        grid_size: The patch grid (rows, cols) (``adapter.grid_size((H, W))``).

    Returns:
        (N, D, rows, cols): channels first, like a convolutional feature map. A view of
        ``tokens`` where possible, so gradients flow back to the tokens.
    """
    if tokens.dim() != 3:
        raise ValueError(
            f"expected tokens (N, tokens, D), got shape {tuple(tokens.shape)}"
        )
    rows, cols = int(grid_size[0]), int(grid_size[1])
    expected = num_prefix_tokens + rows * cols
    if tokens.shape[1] != expected:
        raise ValueError(
            f"{tokens.shape[1]} tokens do not match {num_prefix_tokens} prefix tokens and "
            f"a {rows}x{cols} patch grid ({expected} tokens)"
        )
    patches = tokens[:, num_prefix_tokens:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], rows, cols)


def grid_to_tokens(grid: Tensor, prefix: Tensor) -> Tensor:
    """Inverse of :func:`tokens_to_grid`: prefix tokens (N, P, D) and a grid
    (N, D, rows, cols) back to the token sequence (N, P + rows * cols, D)."""
    patches = grid.flatten(2).transpose(1, 2)
    return torch.cat([prefix, patches], dim=1)


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
    ``ViTLayerGradCam(model, model.blocks[-1].norm1)`` (the common choice, as in
    pytorch-grad-cam) or ``ViTLayerGradCam(model, model.blocks[-1],
    attribute_to_layer_input=True)``.

    Args:
        model: A Vision Transformer supported by :func:`captum_daam.adapters.get_adapter`
            whose layers hold token sequences (N, tokens, D).
        layer: A module of ``model`` whose output (or input) is the token sequence
            (N, prefix + rows * cols, D): a block ``model.blocks[i]`` or its
            ``norm1``.
        attribute_to_layer_input: Explain the layer's input tokens instead of its output.

    Example::

        >>> import timm, torch
        >>> from captum_daam import ViTLayerGradCam
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()
        >>> gradcam = ViTLayerGradCam(model, model.blocks[-1].norm1)
        >>> maps = gradcam.attribute(torch.randn(2, 3, 224, 224), target=[3, 7])
        >>> maps.shape                                      # (2, 1, 14, 14)
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module,
        attribute_to_layer_input: bool = False,
    ) -> None:
        self.adapter = get_adapter(model)
        if not any(module is layer for module in unwrap_model(model).modules()):
            raise ValueError(
                f"layer {type(layer).__name__} is not a module of this model; pass one of "
                "its modules, e.g. model.blocks[-1].norm1"
            )
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
            raise ValueError(
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
    def attribute(  # type: ignore[override]
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
        inputs_tuple = _format_tensor_into_tuples(inputs)
        images = inputs_tuple[0]
        self._grid = check_images(images, self.adapter)
        extra = _format_additional_forward_args(additional_forward_args)
        targets = target_tensor(target, images.shape[0], images.device)
        if targets is None:
            with torch.no_grad():
                logits = self.adapter.logits(self.forward_func(*inputs_tuple, *(extra or ())))
            targets = logits.argmax(dim=1)
        try:
            maps = self.grad_cam.attribute.__wrapped__(  # type: ignore[attr-defined]
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


def _attention_matrices(
    model: nn.Module, inputs: Tuple[Tensor, ...], extra: Tuple[Any, ...]
) -> List[Tensor]:
    """Every block's post-softmax attention (N, heads, T, T), from the adapter's
    all-queries hooks (see :func:`captum_daam._core.flow.attention_matrices`)."""
    adapter = get_adapter(model)
    refusal = adapter.all_queries_refusal
    if refusal is not None:
        raise UnsupportedModelError(f"attention rollout needs every block's attention: {refusal}")
    try:
        return attention_matrices(model, list(adapter.sites), inputs, extra)
    except ValueError as error:
        raise UnsupportedModelError(f"attention rollout: {error}") from None


def attention_rollout(
    model: nn.Module,
    inputs: Inputs,
    additional_forward_args: Optional[object] = None,
    head_fusion: str = "mean",
    residual: float = 0.5,
    token: Optional[str] = None,
) -> Tensor:
    r"""Attention rollout (Abnar & Zuidema, ACL 2020) on the patch grid: a baseline.

    Each block's attention is fused over heads (``A_b``), the residual connection is
    added, ``Â_b = residual * I + (1 - residual) * A_b`` with rows renormalised to one,
    and the blocks are multiplied from the input side, ``R = Â_B … Â_1``. The map is the
    readout token's row of ``R`` over the patch tokens. It is class-agnostic.

    The attention is recomputed from the queries and keys each block computed (q/k-norm
    and any attention mask applied), so timm's fused attention stays on. Implemented
    for the models whose adapter has the all-queries hooks and a readout token (timm
    ``VisionTransformer`` and its subclasses; docs/models.md).

    Args:
        model: A timm ``VisionTransformer`` (eval mode).
        inputs: Images (N, C, H, W), or a tuple whose first element is the images.
        additional_forward_args: Extra positional arguments for the model.
        head_fusion: ``"mean"`` (Abnar & Zuidema), ``"max"`` or ``"min"`` over heads.
        residual: Weight of the identity for the residual connection (0.5 in the paper).
        token: Readout token, ``"cls"`` (default) or ``"dist"`` for a distilled DeiT.

    Returns:
        Maps (N, 1, rows, cols), non-negative, float32 (float64 for float64 models).
    """
    inputs_tuple = _format_tensor_into_tuples(inputs)
    adapter = get_adapter(model)
    grid = check_images(inputs_tuple[0], adapter)
    if not adapter.readout_tokens:
        raise UnsupportedModelError(
            f"attention rollout reads the readout token's row; "
            f"{type(adapter.model).__name__} has no readout token"
        )
    row = adapter.readout_token_index(token)
    fusions = {
        "mean": lambda a: a.mean(dim=1),
        "max": lambda a: a.amax(dim=1),
        "min": lambda a: a.amin(dim=1),
    }
    if head_fusion not in fusions:
        raise ValueError(f"head_fusion {head_fusion!r}: choose one of {sorted(fusions)}")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must lie in [0, 1], got {residual}")
    extra = _format_additional_forward_args(additional_forward_args) or ()
    matrices = _attention_matrices(model, inputs_tuple, extra)
    rollout: Optional[Tensor] = None
    for attention in matrices:
        fused = fusions[head_fusion](attention)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        step = residual * eye + (1.0 - residual) * fused
        step = step / step.sum(dim=-1, keepdim=True)
        rollout = step if rollout is None else step @ rollout
    assert rollout is not None
    patches = rollout[:, row, adapter.num_prefix_tokens :]
    return patches.reshape(patches.shape[0], 1, *grid)


__all__ = ["ViTLayerGradCam", "attention_rollout", "grid_to_tokens", "tokens_to_grid"]
