"""DAAM in input space: the companion of :class:`~captum_daam.DAAM` that Captum's metrics
and ``NoiseTunnel`` take as they take ``IntegratedGradients``.

:class:`~captum_daam.DAAM` returns its final map on the patch grid, (N, 1, rows, cols),
as ``LayerGradCam`` returns its map on a layer. Captum's ``infidelity`` asserts
attributions of exactly the inputs' shape, and ``sensitivity_max`` hands the explainer a
tuple of inputs and expects a tuple of attributions back. :class:`DAAMInput` is to
``DAAM`` what ``GuidedGradCam`` is to ``LayerGradCam``: it upsamples the map to the input
with ``LayerAttribution.interpolate``, repeats it over the channels, and mirrors Captum's
tensor-in/tensor-out, tuple-in/tuple-out convention.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union, overload

import torch
from captum._utils.typing import TargetType
from captum.attr._utils.attribution import GradientAttribution
from captum.log import log_usage
from torch import Tensor, nn

from .attr import DAAM
from .display import check_maps, upsample
from .errors import InvalidInputError, InvalidInputTypeError


@overload
def to_input_space(maps: Tensor, inputs: Tensor, interpolate_mode: str = ...) -> Tensor: ...


@overload
def to_input_space(
    maps: Tensor, inputs: Tuple[Tensor, ...], interpolate_mode: str = ...
) -> Tuple[Tensor, ...]: ...


def to_input_space(
    maps: Tensor,
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    interpolate_mode: str = "bilinear",
) -> Union[Tensor, Tuple[Tensor, ...]]:
    """Spatial maps on a grid, as attributions of the inputs' exact shape.

    The maps are upsampled to the images' height and width with
    ``LayerAttribution.interpolate`` and repeated over the channels, on the images'
    device and in their dtype (Captum's metrics multiply attributions by perturbations of
    the inputs). Any method that returns (N, 1, rows, cols), such as ``LayerGradCam`` or
    attention rollout, can be put beside input-space methods this way.

    Args:
        maps: Maps (N, 1, rows, cols), e.g. ``DAAM.attribute(images)``.
        inputs: The images (N, C, H, W), or a tuple whose first element is the images.
        interpolate_mode: ``"bilinear"`` (default), ``"nearest"``, ``"bicubic"`` or
            ``"area"``, as ``LayerAttribution.interpolate`` takes it.

    Returns:
        A tensor (N, C, H, W) for a tensor ``inputs``; for a tuple, a tuple of the same
        length whose first element is the map over the images and whose further
        elements are zeros shaped like the further inputs (they receive no attribution).
    """
    images = inputs[0] if isinstance(inputs, tuple) else inputs
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InvalidInputError(f"expected images (N, C, H, W) as the first input, got {shape}")
    maps = check_maps(maps, f"maps (N, 1, rows, cols) for {images.shape[0]} images")
    if images.shape[-2] == 0 or images.shape[-1] == 0:
        raise InvalidInputError(f"the images have no pixels, shape {tuple(images.shape)}")
    if maps.shape[1] != 1 or maps.shape[0] != images.shape[0]:
        raise InvalidInputError(
            f"expected maps (N, 1, rows, cols) for {images.shape[0]} images, got shape "
            f"{tuple(maps.shape)}"
        )
    size = (int(images.shape[-2]), int(images.shape[-1]))
    upsampled = upsample(maps.detach(), size, mode=interpolate_mode)
    attribution = upsampled.to(device=images.device, dtype=images.dtype)
    attribution = attribution.expand(-1, images.shape[1], -1, -1).contiguous()
    if not isinstance(inputs, tuple):
        return attribution
    rest: List[Tensor] = []
    for position, extra in enumerate(inputs[1:], start=1):
        if not isinstance(extra, Tensor):
            raise InvalidInputTypeError(
                f"input {position} is a {type(extra).__name__}, not a tensor; pass "
                "non-tensor model arguments as additional_forward_args"
            )
        rest.append(torch.zeros_like(extra))
    return (attribution, *rest)


class DAAMInput(GradientAttribution):
    r"""DAAM's final map as an input attribution, for Captum's metrics and NoiseTunnel.

    Runs :class:`~captum_daam.DAAM` (one forward and one backward pass for the batch),
    upsamples its final accumulated map ``D_B`` from the patch grid to the input size
    with ``LayerAttribution.interpolate`` and repeats it over the input channels. The
    result has exactly the inputs' shape, device and dtype, so that
    ``captum.metrics.infidelity``, ``captum.metrics.sensitivity_max`` and
    ``captum.attr.NoiseTunnel`` take it with no wrapper. This class is to ``DAAM`` what
    ``GuidedGradCam`` is to ``LayerGradCam``.

    Like Grad-CAM, DAAM's maps are not multiplied by the inputs (nor by input minus
    baseline): :attr:`multiplies_by_inputs` is ``False``. They are non-negative and
    unnormalised (in logit units per patch), equal over the channels of a pixel.

    Args:
        model: A supported Vision Transformer classifier, as for
            :class:`~captum_daam.DAAM`.
        layer: ``None`` (every block), an attention module, or a list of them, as for
            :class:`~captum_daam.DAAM`.
        device_ids: Device ids for a ``DataParallel`` model given as a plain forward
            function, as in Captum's layer methods.
        interpolate_mode: How the patch-grid map is upsampled: ``"bilinear"`` (default),
            ``"nearest"`` (piecewise constant per patch), ``"bicubic"`` or ``"area"``.

    Example::

        >>> import torch
        >>> from captum.metrics import infidelity, sensitivity_max
        >>> from captum_daam import DAAMInput
        >>> from captum_daam.zoo import load_default_model
        >>> model = load_default_model()         # the embedded model: 64 px, 6 classes
        >>> explainer = DAAMInput(model)
        >>> images = torch.randn(2, 3, 64, 64)
        >>> attributions = explainer.attribute(images, target=[3, 1])
        >>> attributions.shape                   # the input's shape
        torch.Size([2, 3, 64, 64])
        >>> def perturb(x):
        ...     noise = 0.1 * torch.randn_like(x)
        ...     return noise, x - noise
        >>> infidelity(model, perturb, images, attributions, target=[3, 1]).shape
        torch.Size([2])
        >>> sensitivity_max(explainer.attribute, images, target=[3, 1]).shape
        torch.Size([2])
    """

    def __init__(
        self,
        model: nn.Module,
        layer: Optional[Union[nn.Module, Sequence[nn.Module]]] = None,
        device_ids: Optional[List[int]] = None,
        interpolate_mode: str = "bilinear",
    ) -> None:
        self.daam = DAAM(model, layer, device_ids)
        GradientAttribution.__init__(self, model)
        self.interpolate_mode = interpolate_mode

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    @overload
    def attribute(
        self,
        inputs: Tensor,
        target: TargetType = ...,
        additional_forward_args: Optional[object] = ...,
        token: Optional[str] = ...,
    ) -> Tensor: ...

    @overload
    def attribute(
        self,
        inputs: Tuple[Tensor, ...],
        target: TargetType = ...,
        additional_forward_args: Optional[object] = ...,
        token: Optional[str] = ...,
    ) -> Tuple[Tensor, ...]: ...

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        token: Optional[str] = None,
    ) -> Union[Tensor, Tuple[Tensor, ...]]:
        r"""Explain a batch of images with DAAM, as attributions of the inputs.

        Args:
            inputs: Images (N, C, H, W), preprocessed as the model expects, or a tuple
                whose first element is the images (further tensors are passed to the
                model as positional arguments, as in Captum).
            target: Classes to explain: an int, a list of N ints, or an integer tensor of
                1 or N elements. ``None`` (default) explains each example's predicted
                class, taken from the same forward pass.
            additional_forward_args: Extra positional arguments for the model's forward,
                after the inputs.
            token: Readout token to explain, ``"cls"`` (default) or, for a distilled
                DeiT, ``"dist"``.

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions**:
            - **attributions**: for a tensor input, a tensor of the input's shape
              (N, C, H, W), dtype and device: ``D_B`` upsampled to (H, W) and repeated
              over the C channels. For a tuple input, a tuple: the map over the images
              first, then zeros shaped like each further input.

        Examples::

            >>> import timm, torch
            >>> from captum_daam import DAAMInput
            >>> model = timm.create_model("deit_tiny_patch16_224").eval()  # random weights
            >>> images = torch.randn(1, 3, 224, 224)
            >>> explainer = DAAMInput(model)
            >>> explainer.attribute(images, target=3).shape
            torch.Size([1, 3, 224, 224])
            >>> attr, = explainer.attribute((images,), target=3)     # tuple in, tuple out
        """
        final = self.daam.attribute.__wrapped__(
            self.daam,
            inputs,
            target=target,
            additional_forward_args=additional_forward_args,
            token=token,
        )
        return to_input_space(final, inputs, self.interpolate_mode)


__all__ = ["DAAMInput", "to_input_space"]
