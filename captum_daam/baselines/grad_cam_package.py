"""The methods of the ``grad-cam`` package (pytorch-grad-cam) on a Vision Transformer's
patch grid: their raw CAM, before the package's min-max normalisation and resizing.

The package is optional (extra ``eval``); :func:`grad_cam_package_error` says whether it
can be imported and how to install it.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
from captum._utils.typing import TargetType
from torch import Tensor, nn

from ..adapters import get_adapter
from ..errors import InvalidInputError
from ._base import Inputs, check_inputs, explanation_pass, require_gradients, resolve_targets
from .grid import tokens_to_grid

#: The grad-cam package's class for each of its methods.
GRAD_CAM_CLASSES: Dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
}

#: The methods that need no gradient (no backward pass).
GRADIENT_FREE_CAMS = ("eigencam", "scorecam")


def grad_cam_package_error() -> Optional[str]:
    """Why the grad-cam package cannot be used here, naming the fix; ``None`` where it
    can be imported."""
    try:
        importlib.import_module("pytorch_grad_cam")
    except ImportError as error:
        return (
            f"the grad-cam package cannot be imported ({error}); install the evaluation "
            "extra: pip install 'captum-daam[eval]'"
        )
    return None


@contextmanager
def _left_as_found(model: nn.Module) -> Iterator[None]:
    """Freeze the parameters for the duration (the maps need activation gradients only)
    and restore every module's mode and every parameter's ``requires_grad`` and
    ``.grad`` afterwards: the grad-cam package calls ``model.eval()`` and
    ``model.zero_grad()``."""
    modes = [(module, module.training) for module in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        for param, _, _ in params:
            param.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad, grad in params:
            param.requires_grad_(requires_grad)
            param.grad = grad


class PackageCAM:
    r"""A method of the grad-cam package on the last block's input tokens, laid out on the
    patch grid: the package's raw CAM.

    The layer is the adapter's :attr:`~captum_daam.adapters.ModelAdapter.gradcam_layer`
    (the last block's ``norm1`` in timm ViTs, DeiT, BEiT, EVA), the package's
    ``reshape_transform`` is :func:`~captum_daam.baselines.tokens_to_grid` (prefix tokens
    dropped). The package's ``BaseCAM.compute_cam_per_layer`` computes the grid-level CAM
    with ``get_cam_image`` (weighted activations summed over channels; EigenCAM: the
    first principal component), applies a ReLU, then min-max normalises and resizes it
    with cv2. The instance's ``get_cam_image`` is wrapped to keep its exact output, to
    which the same ReLU is applied here: the package's own computation, before
    normalisation.

    The model is left exactly as found: the package's ``model.eval()`` and
    ``model.zero_grad()`` are undone, parameters are frozen during the call, and its
    hooks are released, also on error.

    Args:
        model: A Vision Transformer classifier supported by
            :func:`captum_daam.adapters.get_adapter` whose adapter names a Grad-CAM layer.
        method: One of :data:`GRAD_CAM_CLASSES`: ``"gradcam"``, ``"gradcam++"``,
            ``"xgradcam"``, ``"layercam"``, ``"eigencam"``, ``"scorecam"``.
        batch_size: ScoreCAM's masked images per forward pass (the package's default,
            32, when ``None``).

    Raises:
        ImportError: without the grad-cam package (extra ``eval``).
        UnsupportedModelError: for a model without a Grad-CAM layer.

    Example::

        >>> import timm, torch
        >>> from captum_daam.baselines import PackageCAM
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()
        >>> cam = PackageCAM(model, "gradcam++")
        >>> cam.attribute(torch.randn(2, 3, 224, 224), target=[3, 7]).shape  # (2, 1, 14, 14)
    """

    def __init__(
        self, model: nn.Module, method: str = "gradcam", batch_size: Optional[int] = None
    ) -> None:
        if method not in GRAD_CAM_CLASSES:
            raise InvalidInputError(
                f"unknown grad-cam method {method!r}; choose one of {', '.join(GRAD_CAM_CLASSES)}"
            )
        if batch_size is not None and int(batch_size) < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size}")
        missing = grad_cam_package_error()
        if missing is not None:
            raise ImportError(f"method {method!r} is not available: {missing}")
        self.model = model
        self.method = method
        self.batch_size = None if batch_size is None else int(batch_size)
        self.adapter = get_adapter(model)
        self.layer = self.adapter.gradcam_layer
        package = importlib.import_module("pytorch_grad_cam")
        self._cam_class = getattr(package, GRAD_CAM_CLASSES[method])

    def attribute(self, inputs: Inputs, target: TargetType = None) -> Tensor:
        r"""The package's raw CAM on the patch grid.

        Args:
            inputs: Images (N, C, H, W), or a one-tuple of them.
            target: Classes to explain: an int, a list of N ints or an integer tensor;
                ``None`` (default) explains each image's predicted class.

        Returns:
            Maps (N, 1, rows, cols), non-negative, float32 on the CPU (the package
            computes in numpy).
        """
        require_gradients(self.method)
        inputs_tuple, grid = check_inputs(inputs, self.adapter)
        if len(inputs_tuple) != 1:
            raise InvalidInputError("the grad-cam package takes one tensor of images")
        images = inputs_tuple[0]
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        prefix = self.adapter.num_prefix_tokens

        def reshape(tokens: Tensor) -> Tensor:
            return tokens_to_grid(tokens, prefix, grid)

        raw: List[np.ndarray] = []
        needs_gradients = self.method not in GRADIENT_FREE_CAMS
        batch = images.detach().clone().requires_grad_(needs_gradients)
        with explanation_pass(self.model) as eager, _left_as_found(eager), torch.enable_grad():
            targets = resolve_targets(eager, self.adapter, inputs_tuple, target)
            cam = self._cam_class(
                model=eager, target_layers=[self.layer], reshape_transform=reshape
            )
            try:
                if self.batch_size is not None:
                    cam.batch_size = self.batch_size
                package_cam_image = cam.get_cam_image

                def keep_raw(*args: Any, **kwargs: Any) -> np.ndarray:
                    image = package_cam_image(*args, **kwargs)
                    raw.append(image)
                    return image

                cam.get_cam_image = keep_raw
                cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            finally:
                cam.activations_and_grads.release()
        maps = torch.from_numpy(np.maximum(raw[0], 0))
        return maps[:, None].to(torch.float32)


__all__ = ["GRADIENT_FREE_CAMS", "GRAD_CAM_CLASSES", "PackageCAM", "grad_cam_package_error"]
