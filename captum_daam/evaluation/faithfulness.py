"""Faithfulness of maps to the model: deletion and insertion curves over patch tokens,
and Captum's ``infidelity`` and ``sensitivity_max``.

Deletion and insertion (Petsiuk et al., 2018, RISE) on a Vision Transformer's patch
grid: patches are ranked by the map, most relevant first (ties by raster order), and

* **deletion** replaces the top-k patches of the image with a baseline, for k = 0
  (the clean image) up to all patches;
* **insertion** starts from the baseline (k = 0, the empty image) and puts the top-k
  patches of the image back, up to the full image.

The curve is the softmax probability of the target class against the fraction of
patches removed (inserted), and the AUC is its trapezoidal area over [0, 1], both end
points included. A faithful map has a low deletion AUC and a high insertion AUC.

The baseline (what a removed patch shows) is, by default, the image blurred with a
Gaussian of sigma half a patch side: it removes the detail within a patch but keeps the
image's coarse colours, so that the perturbed images stay closer to the data than flat
patches (RISE's insertion baseline). ``baseline="zeros"`` gives zeros in the model's
input space (the dataset's mean colour after normalisation); a number, a tensor or a
function of the images can be given as well. The same baseline serves both curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from captum._utils.typing import TargetType
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from ..adapters import get_adapter
from ..baselines import class_targets
from ..errors import InvalidInputError, InvalidInputTypeError, UnsupportedModelError
from ..input_space import to_input_space
from .similarity import channel_maps

Forward = Callable[[Tensor], Tensor]
Baseline = Union[str, float, Tensor, Callable[[Tensor], Tensor]]
Explain = Callable[[Tensor, Tensor], Tensor]


@dataclass
class DeletionInsertion:
    """Deletion and insertion curves of a batch.

    Attributes:
        fractions: (S + 1,) fraction of patches removed (inserted) at each point, from
            0 to 1.
        deletion: (N, S + 1) target-class probability as the most relevant patches are
            replaced by the baseline; ``deletion[:, 0]`` is the clean image.
        insertion: (N, S + 1) the same as they are put back into the baseline;
            ``insertion[:, 0]`` is the baseline image, ``insertion[:, -1]`` the clean one.
        deletion_auc: (N,) trapezoidal area under ``deletion`` over ``fractions``.
        insertion_auc: (N,) the same for ``insertion``.
        targets: (N,) the classes whose probability was followed.
    """

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor
    deletion_auc: Tensor
    insertion_auc: Tensor
    targets: Tensor


def logits_function(model_or_forward: Union[nn.Module, Forward]) -> Forward:
    """A function images -> (N, classes) logits for a model or a forward function; a
    supported model's structured output (Hugging Face) is unpacked by its adapter.

    Example::

        >>> logits_function(model)(images).argmax(-1)
    """
    if not callable(model_or_forward):
        raise InvalidInputTypeError(
            f"expected a model or a function images -> logits, got "
            f"{type(model_or_forward).__name__}"
        )
    if isinstance(model_or_forward, nn.Module):
        try:
            adapter = get_adapter(model_or_forward)
        except UnsupportedModelError:
            return model_or_forward
        return lambda images: adapter.logits(model_or_forward(images))  # type: ignore[return-value]
    return model_or_forward


def _resolve_grid(
    model_or_forward: Union[nn.Module, Forward],
    grid_size: Optional[Tuple[int, int]],
    size: Tuple[int, int],
) -> Tuple[int, int]:
    if grid_size is None:
        if not isinstance(model_or_forward, nn.Module):
            raise InvalidInputError("pass grid_size=(rows, cols) with a plain forward function")
        try:
            grid_size = get_adapter(model_or_forward).grid_size(size)
        except UnsupportedModelError as error:
            raise InvalidInputError(
                f"cannot tell the patch grid of {type(model_or_forward).__name__}; pass "
                "grid_size=(rows, cols)"
            ) from error
    rows, cols = int(grid_size[0]), int(grid_size[1])
    if rows < 1 or cols < 1 or size[0] % rows or size[1] % cols:
        raise InvalidInputError(
            f"images of {size[0]}x{size[1]} pixels do not split into a {rows}x{cols} patch "
            "grid; pass the model's patch grid (rows, cols) for images whose sides are "
            "multiples of the patch size"
        )
    return rows, cols


def blurred(images: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of images (N, C, H, W) with standard deviation ``sigma`` pixels
    (kernel of 3 sigma each side, at most what reflect padding allows).

    Example::

        >>> baseline = blurred(images, sigma=8.0)
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = (
            f"{images.dtype} {tuple(images.shape)}"
            if isinstance(images, Tensor)
            else type(images).__name__
        )
        raise InvalidInputError(f"blurred takes float images (N, C, H, W), got {shape}")
    if sigma <= 0:
        return images.clone()
    half = min(int(math.ceil(3 * sigma)), min(images.shape[-2:]) - 1)
    if half < 1:
        return images.clone()
    return gaussian_blur(images, kernel_size=[2 * half + 1] * 2, sigma=[float(sigma)] * 2)


def _baseline_images(baseline: Baseline, images: Tensor, patch: Tuple[int, int]) -> Tensor:
    if isinstance(baseline, str):
        if baseline == "blur":
            return blurred(images, max(patch) / 2.0)
        if baseline == "zeros":
            return torch.zeros_like(images)
        raise InvalidInputError(
            f"unknown baseline {baseline!r}; use 'blur', 'zeros', a number, a tensor or a "
            "function images -> baseline images"
        )
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(images).expand_as(images)
        except RuntimeError as error:
            raise InvalidInputError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to the "
                f"images {tuple(images.shape)}"
            ) from error
    if callable(baseline):
        out = baseline(images)
        if not isinstance(out, Tensor) or out.shape != images.shape:
            raise InvalidInputError(
                "a baseline function must return a tensor shaped like the images"
            )
        return out.to(images)
    raise InvalidInputTypeError(f"unsupported baseline {type(baseline).__name__}")


def patch_ranks(maps: Tensor, grid_size: Tuple[int, int]) -> Tensor:
    """Rank of every patch by its map value, 0 for the most relevant, (N, rows, cols).

    Maps of any resolution are average-pooled to the patch grid first; equal values
    rank in raster order.

    Args:
        maps: (N, 1, h, w) or (N, h, w) maps.
        grid_size: The patch grid (rows, cols).

    Returns:
        (N, rows, cols) long ranks.

    Example::

        >>> patch_ranks(daam.attribute(images), (14, 14))[0].flatten().argsort()[:5]
    """
    maps = channel_maps(maps).detach().to(torch.float64)
    if not bool(torch.isfinite(maps).all()):
        raise InvalidInputError("maps contain NaN or infinite values")
    rows, cols = grid_size
    if tuple(maps.shape[-2:]) != (rows, cols):
        maps = F.adaptive_avg_pool2d(maps, (rows, cols))
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return ranks.reshape(-1, rows, cols)


def _auc(curves: Tensor, fractions: Tensor) -> Tensor:
    return torch.trapezoid(curves, fractions, dim=-1)


def deletion_insertion(
    model_or_forward: Union[nn.Module, Forward],
    images: Tensor,
    targets: TargetType,
    maps: Tensor,
    grid_size: Optional[Tuple[int, int]] = None,
    steps: Optional[int] = None,
    baseline: Baseline = "blur",
    batch_size: int = 64,
) -> DeletionInsertion:
    """Deletion and insertion curves and AUCs of maps, over the model's patch tokens.

    Patches are ranked by ``maps`` (most relevant first); point s of a curve removes
    (inserts) the top ``round(s * P / steps)`` of the P patches. Perturbed images are
    built and scored in batches of ``batch_size`` under ``torch.no_grad()``; the model
    is used as given (call ``model.eval()`` first).

    Args:
        model_or_forward: The classifier (a module or a function images -> logits).
        images: (N, C, H, W) preprocessed images.
        targets: Classes whose probability is followed: an int, N ints, an integer
            tensor, or ``None`` for each image's predicted class.
        maps: (N, 1, h, w) or (N, h, w) maps on the patch grid or at any resolution
            (average-pooled to the grid).
        grid_size: The patch grid (rows, cols); by default the model's (supported
            models only). H and W must be multiples of rows and cols.
        steps: Points after the first; ``None`` (default) moves one patch per step.
        baseline: What removed patches show: ``"blur"`` (default, see the module),
            ``"zeros"``, a number, a tensor broadcastable to the images, or a function
            images -> baseline images.
        batch_size: Perturbed images per forward pass.

    Returns:
        :class:`DeletionInsertion` with the curves, their AUCs and the targets.

    Example::

        >>> result = deletion_insertion(model, images, labels, daam.attribute(images, labels))
        >>> result.deletion_auc.mean(), result.insertion_auc.mean()
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InvalidInputError("images must be a tensor (N, C, H, W)")
    count = int(images.shape[0])
    if maps.shape[0] != count:
        raise InvalidInputError(f"got {maps.shape[0]} maps for {count} images")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    size = (int(images.shape[-2]), int(images.shape[-1]))
    rows, cols = _resolve_grid(model_or_forward, grid_size, size)
    patches = rows * cols
    steps = patches if steps is None else int(steps)
    if not 1 <= steps <= patches:
        raise InvalidInputError(f"steps must be between 1 and the {patches} patches, got {steps}")
    forward = logits_function(model_or_forward)
    patch = (size[0] // rows, size[1] // cols)
    ranks = patch_ranks(maps, (rows, cols)).to(images.device)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * patches / steps)
    counts = counts.to(device=images.device, dtype=torch.long)

    with torch.no_grad():
        base = _baseline_images(baseline, images.detach(), patch)
        if targets is None:
            targets_t = forward(images).argmax(dim=-1)
        else:
            targets_t = class_targets(targets, count, images.device)

        def curve(start: Tensor, end: Tensor) -> Tensor:
            """Probabilities along start -> end, patches switched to ``end`` in rank
            order: (N, steps + 1)."""
            total = count * (steps + 1)
            out = torch.empty(total, dtype=torch.float64)
            for lo in range(0, total, batch_size):
                index = torch.arange(lo, min(lo + batch_size, total), device=images.device)
                image, step = index // (steps + 1), index % (steps + 1)
                switched = ranks[image] < counts[step][:, None, None]
                pixels = switched.repeat_interleave(patch[0], 1).repeat_interleave(patch[1], 2)
                batch = torch.where(pixels[:, None], end[image], start[image])
                probs = torch.softmax(forward(batch).to(torch.float64), dim=-1)
                out[lo : lo + len(index)] = probs.gather(1, targets_t[image][:, None])[:, 0].cpu()
            return out.reshape(count, steps + 1)

        deletion = curve(images, base)
        insertion = curve(base, images)
    fractions = counts.cpu().to(torch.float64) / patches
    return DeletionInsertion(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=_auc(deletion, fractions),
        insertion_auc=_auc(insertion, fractions),
        targets=targets_t.cpu(),
    )


def gaussian_perturbation(std: float = 0.1) -> Callable[[Tensor], Tuple[Tensor, Tensor]]:
    """A perturbation for ``captum.metrics.infidelity``: Gaussian noise of ``std``
    (in model-input units), returned as ``(perturbation, inputs - perturbation)``.

    Example::

        >>> infidelity(model, gaussian_perturbation(0.1), images, attributions, target=labels)
    """

    def perturb(inputs: Tensor) -> Tuple[Tensor, Tensor]:
        noise = torch.randn_like(inputs) * std
        return noise, inputs - noise

    return perturb


def explain_in_input_space(explain: Explain) -> Callable[..., Union[Tensor, Tuple[Tensor, ...]]]:
    """An ``explain(images, targets) -> (N, 1, h, w)`` map function ((N, h, w) is taken
    too) as a Captum explanation
    function: ``f(inputs, target=None) -> (N, C, H, W)`` attributions (a one-tuple for
    a one-tuple of inputs, as Captum's methods), the maps upsampled to the images and
    repeated over channels with
    :func:`~captum_daam.input_space.to_input_space` (as :class:`~captum_daam.DAAMInput`
    does for DAAM). Gradients are enabled inside, so that gradient-based explainers work
    under Captum's ``torch.no_grad()``.

    Example::

        >>> sensitivity_max(explain_in_input_space(explain), images, target=labels)
    """

    def attribution(
        inputs: Union[Tensor, Tuple[Tensor, ...]], target: TargetType = None
    ) -> Union[Tensor, Tuple[Tensor, ...]]:
        if isinstance(inputs, tuple) and len(inputs) != 1:
            raise InvalidInputError("explain functions take one tensor of images")
        images = inputs[0] if isinstance(inputs, tuple) else inputs
        targets_t = class_targets(target, int(images.shape[0]), images.device)
        with torch.enable_grad():
            maps = explain(images, targets_t)
        return to_input_space(channel_maps(maps, "maps from explain").detach(), inputs)

    return attribution


def captum_metrics(
    model_or_forward: Union[nn.Module, Forward],
    explain: Explain,
    images: Tensor,
    targets: TargetType,
    n_perturb_samples: int = 10,
    noise_std: float = 0.1,
    perturb_radius: float = 0.02,
    normalize: bool = True,
    max_examples_per_batch: Optional[int] = None,
    seed: Optional[int] = 0,
    maps: Optional[Tensor] = None,
) -> Dict[str, Tensor]:
    """Captum's ``infidelity`` and ``sensitivity_max`` for a map explainer.

    The maps of ``explain`` are put in input space with
    :func:`explain_in_input_space`. Both metrics follow the model's output for the
    target class (the logit, for a classifier returning logits). Infidelity (Yeh et al.,
    2019) uses Gaussian
    perturbations of ``noise_std`` (:func:`gaussian_perturbation`) and, by default,
    Captum's ``normalize=True``, which rescales the attributions optimally first, so
    that maps in different units (logits, probabilities, [0, 1]) compare fairly.
    Sensitivity-max uses Captum's default uniform perturbation of ``perturb_radius``.

    Args:
        model_or_forward: The classifier (a module or a function images -> logits).
        explain: ``explain(images, targets) -> (N, 1, h, w)`` maps (any resolution;
            (N, h, w) is taken too).
        images: (N, C, H, W) preprocessed images.
        targets: Classes explained: an int, N ints or an integer tensor (N,).
        n_perturb_samples: Perturbations per image for both metrics.
        noise_std: Standard deviation of the infidelity perturbations.
        perturb_radius: Radius of the sensitivity perturbations.
        normalize: Captum's ``normalize`` for infidelity.
        max_examples_per_batch: Captum's batching of perturbed examples.
        seed: Seeds torch's random generator for reproducible perturbations (the global
            state is restored afterwards); ``None`` leaves it alone.
        maps: ``explain(images, targets)`` if already computed, (N, 1, h, w) or
            (N, h, w), so that it is not computed again for infidelity.

    Returns:
        ``{"infidelity": (N,), "sensitivity_max": (N,)}`` (lower is better for both).

    Example::

        >>> captum_metrics(model, make_explainer("daam", model), images, labels)
    """
    from captum.metrics import infidelity, sensitivity_max

    forward = logits_function(model_or_forward)
    targets_t = class_targets(targets, int(images.shape[0]), images.device)
    if targets_t is None:
        raise InvalidInputError("captum_metrics needs explicit targets (one class per image)")
    attribution = explain_in_input_space(explain)
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if maps is None:
            attributions = attribution(images, targets_t)
        else:
            attributions = to_input_space(channel_maps(maps).detach(), images)
        infid = infidelity(
            forward,
            gaussian_perturbation(noise_std),
            images,
            attributions,
            target=targets_t,
            n_perturb_samples=n_perturb_samples,
            max_examples_per_batch=max_examples_per_batch,
            normalize=normalize,
        )
        sens = sensitivity_max(
            attribution,
            images,
            perturb_radius=perturb_radius,
            n_perturb_samples=n_perturb_samples,
            max_examples_per_batch=max_examples_per_batch,
            target=targets_t,
        )
    return {"infidelity": infid.detach().cpu(), "sensitivity_max": sens.detach().cpu()}


__all__ = [
    "DeletionInsertion",
    "blurred",
    "captum_metrics",
    "deletion_insertion",
    "explain_in_input_space",
    "gaussian_perturbation",
    "logits_function",
    "patch_ranks",
]
