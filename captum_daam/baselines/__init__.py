"""Baselines to put beside DAAM, one method per module, on the same patch grid.

None is part of DAAM. They exist so that comparisons are fair: every map is
(N, 1, rows, cols) on the patch grid of the model's adapter
(:func:`captum_daam.adapters.get_adapter`), which also says where the prefix tokens are.

==================================  ====================================================
:class:`ViTLayerGradCam`            Captum's ``LayerGradCam`` on a layer's patch tokens
                                    laid out on the grid (:func:`tokens_to_grid`).
:class:`PackageCAM`                 The grad-cam package's GradCAM, GradCAM++, XGradCAM,
                                    LayerCAM, EigenCAM, ScoreCAM: their raw CAM.
:func:`attention_rollout`           Abnar & Zuidema (2020): head-fused attention with the
                                    residual, multiplied through the blocks.
:func:`gradient_weighted_rollout`   Chefer et al. (2021): attention weighted by its
                                    gradient, rolled out.
:func:`raw_attention`               The last block's readout-token attention.
==================================  ====================================================

The shared checks (:func:`check_inputs`, :func:`check_batch`, :func:`resolve_targets`,
:func:`class_targets`, :func:`require_gradients`) give every method the same errors.
"""

from ._base import (
    check_batch,
    check_inputs,
    class_targets,
    require_gradients,
    resolve_targets,
)
from .chefer import gradient_weighted_rollout
from .grad_cam import ViTLayerGradCam
from .grad_cam_package import (
    GRAD_CAM_CLASSES,
    GRADIENT_FREE_CAMS,
    PackageCAM,
    grad_cam_package_error,
)
from .grid import grid_to_tokens, tokens_to_grid
from .raw_attention import raw_attention
from .rollout import attention_rollout

__all__ = [
    "GRADIENT_FREE_CAMS",
    "GRAD_CAM_CLASSES",
    "PackageCAM",
    "ViTLayerGradCam",
    "attention_rollout",
    "check_batch",
    "check_inputs",
    "class_targets",
    "grad_cam_package_error",
    "gradient_weighted_rollout",
    "grid_to_tokens",
    "raw_attention",
    "require_gradients",
    "resolve_targets",
    "tokens_to_grid",
]
