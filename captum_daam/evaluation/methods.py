"""The explanation methods of the evaluation harness, behind one registry.

Every method is built by :func:`make_explainer` into an :class:`Explainer`: a callable
``explain(images, targets) -> maps`` that explains a batch for given classes, so that the
harness runs DAAM and its peers on the same images, targets and weights in one run.

Maps are float32 on the CPU, non-negative, one per image, (N, rows, cols) on the patch
grid (rows, cols) of the model's adapter, except ``"integrated_gradients"``, which is at
pixel resolution (N, H, W). Nothing here knows where the prefix tokens or the patch grid
are: that comes from :func:`captum_daam.adapters.get_adapter`.

=======================  =============================================================
``"daam"``               :class:`captum_daam.DAAM`, the final accumulated map ``D_B``.
``"daam_all"``           :class:`captum_daam.DAAM` with ``queries="all"`` (every query row).
``"gradcam"`` ...        The ``grad-cam`` package (extra ``eval``): GradCAM, GradCAM++,
``"scorecam"``           XGradCAM, LayerCAM, EigenCAM, ScoreCAM on the last block's
                         ``norm1``, prefix tokens dropped, patches on the grid; the raw
                         grid-level CAM (ReLU of the weighted activations).
``"rollout"``            :func:`captum_daam.attention_rollout` (Abnar & Zuidema, 2020).
``"chefer"``             Gradient-weighted rollout (Chefer et al., ICCV 2021): ``R = I``;
                         per block ``Ā = mean_h ReLU(∇A ⊙ A)``, ``R = R + Ā R``; the
                         readout row of ``R`` over the patches.
``"raw_attention"``      The last block's readout-token attention over the patches,
                         averaged over heads.
``"integrated_gradients"``  Captum ``IntegratedGradients`` from a zero baseline, summed
                         over channels, absolute value (or positive part).
``"uniform"``            Ones on the grid: the chance reference.
=======================  =============================================================
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from .._core.capture import record_attention
from .._core.decomposition import full_attention
from .._core.flow import site_gradients
from .._core.inputs import check_images
from .._core.targets import target_tensor
from ..adapters import get_adapter, unwrap_model
from ..adapters.base import ModelAdapter
from ..attr import DAAM
from ..baselines import attention_rollout, tokens_to_grid
from ..errors import UnsupportedModelError

#: ``explain(images (N, C, H, W), targets (N,) long) -> maps (N, h, w)``, float32, CPU.
Explain = Callable[[Tensor, Tensor], Tensor]

#: What a builder returns: ``run(images, targets, grid) -> maps`` (any dtype or device).
_Run = Callable[[Tensor, Tensor, Tuple[int, int]], Tensor]

#: The methods, in the order the harness reports them.
METHODS: Tuple[str, ...] = (
    "daam",
    "daam_all",
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "eigencam",
    "scorecam",
    "rollout",
    "chefer",
    "raw_attention",
    "integrated_gradients",
    "uniform",
)

#: The grad-cam package's class for each of its methods.
GRAD_CAM_CLASSES: Dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
}

#: The grad-cam methods that need no gradient (no backward pass).
_GRADIENT_FREE_CAMS = ("eigencam", "scorecam")

_BUILDERS: Dict[str, Callable[..., _Run]] = {}


def _register(*names: str) -> Callable[[Callable[..., _Run]], Callable[..., _Run]]:
    def register(builder: Callable[..., _Run]) -> Callable[..., _Run]:
        for name in names:
            _BUILDERS[name] = builder
        return builder

    return register


def unavailable_methods() -> Dict[str, str]:
    """The methods that cannot run in this environment, with the reason and the fix.

    Returns:
        ``{name: reason}``; empty where everything is installed. Only the grad-cam
        family depends on an optional package (``pytorch_grad_cam``, extra ``eval``).
    """
    try:
        importlib.import_module("pytorch_grad_cam")
    except ImportError as error:
        reason = (
            f"the grad-cam package cannot be imported ({error}); install the evaluation "
            "extra: pip install 'captum-daam[eval]'"
        )
        return {name: reason for name in GRAD_CAM_CLASSES}
    return {}


def available_methods(warn: bool = True) -> Tuple[str, ...]:
    r"""The names in :data:`METHODS` that can run here, in the same order.

    Args:
        warn: Emit a ``UserWarning`` naming the methods left out and why (the grad-cam
            family, when ``pytorch_grad_cam`` is not installed).

    Returns:
        *tuple* of *str*: method names for :func:`make_explainer`.

    Example::

        >>> from captum_daam.evaluation.methods import available_methods
        >>> available_methods()
        ('daam', 'gradcam', ..., 'uniform')
    """
    missing = unavailable_methods()
    if missing and warn:
        reasons = sorted(set(missing.values()))
        warnings.warn(
            f"leaving out {', '.join(missing)}: {'; '.join(reasons)}", stacklevel=2
        )
    return tuple(name for name in METHODS if name not in missing)


class Explainer:
    """One explanation method bound to a model: ``explainer(images, targets)``.

    Built by :func:`make_explainer`. Validates the batch and the targets, runs the method
    with gradients enabled (so it also works inside ``torch.no_grad()``), and returns
    detached float32 maps on the CPU.

    Attributes:
        name: The method's name in :data:`METHODS`.
        on_grid: ``True`` when maps are on the patch grid (rows, cols), ``False`` when
            they are at the images' pixel resolution (``"integrated_gradients"``).
        options: The options the method was built with.
    """

    def __init__(
        self, name: str, adapter: ModelAdapter, run: _Run, options: Dict[str, Any]
    ) -> None:
        self.name = name
        self.adapter = adapter
        self.on_grid = name != "integrated_gradients"
        self.options = dict(options)
        self._run = run

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"Explainer({self.name!r}{', ' if options else ''}{options})"

    def __call__(self, images: Tensor, targets: Tensor) -> Tensor:
        """Explain ``images`` for ``targets``.

        Args:
            images: Preprocessed images (N, C, H, W) in the model's dtype and device.
            targets: Class per image, (N,) integer tensor (a list of N ints, or one int
                for all, is accepted too).

        Returns:
            Maps (N, rows, cols) on the patch grid, or (N, H, W) for
            ``"integrated_gradients"``; float32, CPU, non-negative.
        """
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"{self.name} needs gradients and cannot run inside "
                "torch.inference_mode(); torch.no_grad() is fine"
            )
        grid = check_images(images, self.adapter)
        if images.is_inference():
            images = images.clone()
        targets = _check_targets(targets, images, self.adapter)
        with torch.enable_grad():
            maps = self._run(images, targets, grid)
        return maps.detach().to(device="cpu", dtype=torch.float32)


def make_explainer(name: str, model: nn.Module, **options: Any) -> Explainer:
    r"""Bind the explanation method ``name`` to ``model``.

    Args:
        name: One of :data:`METHODS` (see :func:`available_methods`).
        model: A Vision Transformer classifier in eval mode, supported by
            :func:`captum_daam.adapters.get_adapter`. The grad-cam family needs a
            ``model.blocks[-1].norm1`` (timm ViTs, DeiT, BEiT, EVA); ``"rollout"`` and
            ``"chefer"`` need a timm ``VisionTransformer``. The model is left exactly as
            found: no hooks, flags, ``requires_grad`` or ``.grad`` changed.
        **options: Method options:

            - ``"daam"``, ``"rollout"``, ``"chefer"``, ``"raw_attention"``: ``token``,
              the readout token (``"cls"``, default, or ``"dist"`` for a distilled DeiT).
            - ``"rollout"``: ``head_fusion`` (``"mean"``), ``residual`` (0.5), as in
              :func:`captum_daam.attention_rollout`.
            - ``"scorecam"``: ``batch_size`` (32), masked images per forward pass.
            - ``"integrated_gradients"``: ``n_steps`` (50), ``method``
              (``"gausslegendre"``), ``internal_batch_size`` (default: the batch size
              N, so memory stays that of one forward+backward of the batch),
              ``baseline`` (0.0: the zero image in normalised space), ``sign``
              (``"absolute_value"``, default: ``|sum_c attribution|``; or
              ``"positive"``: ``max(sum_c attribution, 0)``, as Captum's
              ``visualize_image_attr``).

    Returns:
        *Explainer*: ``explain(images, targets) -> maps`` (N, rows, cols), float32, CPU,
        non-negative; (N, H, W) for ``"integrated_gradients"``.

    Example::

        >>> import timm, torch
        >>> from captum_daam.evaluation.methods import make_explainer
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()
        >>> explain = make_explainer("chefer", model)
        >>> maps = explain(torch.randn(2, 3, 224, 224), torch.tensor([3, 7]))
        >>> maps.shape                                       # (2, 14, 14)
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    missing = unavailable_methods()
    if name in missing:
        raise ImportError(f"method {name!r} is not available: {missing[name]}")
    builder = _BUILDERS[name]
    accepted = [
        p.name for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"method {name!r} takes the options {accepted or 'none'}, not {unknown}"
        )
    adapter = get_adapter(model)
    run = builder(model, adapter, name, **options)
    return Explainer(name, adapter, run, options)


def _check_targets(targets: object, images: Tensor, adapter: ModelAdapter) -> Tensor:
    if targets is None:
        raise ValueError(
            "targets are required: pass the labels, or model(images).argmax(1) for the "
            "predicted classes"
        )
    checked = target_tensor(targets, int(images.shape[0]), images.device)
    assert checked is not None
    num_classes = adapter.num_classes
    if num_classes is not None:
        bad = (checked < 0) | (checked >= num_classes)
        if bool(bad.any()):
            raise ValueError(
                f"targets {checked[bad].tolist()} out of range for a model with "
                f"{num_classes} classes; targets must lie in [0, {num_classes - 1}]"
            )
    return checked


def _logits(model: nn.Module, adapter: ModelAdapter) -> Callable[[Tensor], Tensor]:
    def forward(images: Tensor) -> Tensor:
        return adapter.logits(model(images))  # type: ignore[return-value]

    return forward


# --- DAAM, rollout, uniform -------------------------------------------------------------


@_register("daam", "daam_all")
def _daam(
    model: nn.Module, adapter: ModelAdapter, name: str, *, token: Optional[str] = None
) -> _Run:
    """``"daam"``: the model's natural mode (readout for class-token models);
    ``"daam_all"``: the all-queries mode (docs/method.md)."""
    daam = DAAM(model, queries="all" if name == "daam_all" else None)

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        return daam.attribute(images, target=targets, token=token)[:, 0]

    return run


@_register("rollout")
def _rollout(
    model: nn.Module,
    adapter: ModelAdapter,
    name: str,
    *,
    head_fusion: str = "mean",
    residual: float = 0.5,
    token: Optional[str] = None,
) -> _Run:
    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        maps = attention_rollout(
            model, images, head_fusion=head_fusion, residual=residual, token=token
        )
        return maps[:, 0]

    return run


@_register("uniform")
def _uniform(model: nn.Module, adapter: ModelAdapter, name: str) -> _Run:
    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        return torch.ones(images.shape[0], *grid)

    return run


# --- attention: raw last-block attention and Chefer's gradient-weighted rollout ----------


@_register("raw_attention")
def _raw_attention(
    model: nn.Module, adapter: ModelAdapter, name: str, *, token: Optional[str] = None
) -> _Run:
    row = adapter.readout_token_index(token)
    last = list(adapter.sites)[-1:]

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        with record_attention(last, row) as recorder, torch.no_grad():
            model(images)
        a0, _ = recorder.gather()[0]  # the readout row (N, heads, tokens)
        patches = a0.mean(dim=1)[:, adapter.num_prefix_tokens :]
        return patches.reshape(images.shape[0], *grid)

    return run


def _attention_and_gradients(
    model: nn.Module, adapter: ModelAdapter, images: Tensor, targets: Tensor
) -> List[Tuple[Tensor, Tensor]]:
    """``(A_b, d score / d A_b)`` of every block, (N, heads, T, T) each, from one forward
    and one backward pass.

    ``Z = A V`` per head (``Z`` the input of the projection), so ``∇A[h, i, j] =
    sum_d G[i, h, d] V[h, j, d]`` with ``G = d score / d Z``: DAAM's pass
    (:func:`~captum_daam._core.flow.site_gradients`, all-queries records, fused attention
    left on) gives ``G`` and the queries, keys and values that ``A`` is recomputed from.
    """
    logits = _logits(model, adapter)

    def score(output: Tensor) -> Tensor:
        return output.gather(1, targets[:, None]).squeeze(1)

    records, grads = site_gradients(logits, list(adapter.sites), (images,), score, None,
                                    device_ids=getattr(model, "device_ids", None))
    out = []
    for site, record, grad_z in zip(adapter.sites, records, grads):
        batch, groups, heads, tokens, head_dim = record.v.shape
        if groups != 1:
            raise UnsupportedModelError(
                f"gradient-weighted rollout needs one attention over all tokens per block; "
                f"{site.name} attends within {groups} separate windows"
            )
        attention = full_attention(record.q, record.k, record.scale, record.bias)[:, 0]
        g = grad_z.to(record.v.device, attention.dtype).reshape(batch, tokens, heads, head_dim)
        gradient = torch.matmul(g.transpose(1, 2), record.v[:, 0].to(attention.dtype).transpose(-2, -1))
        out.append((attention, gradient))
    return out


@_register("chefer")
def _chefer(
    model: nn.Module, adapter: ModelAdapter, name: str, *, token: Optional[str] = None
) -> _Run:
    row = adapter.readout_token_index(token)

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        relevance: Optional[Tensor] = None
        for attention, gradient in _attention_and_gradients(model, adapter, images, targets):
            fused = (gradient * attention).clamp(min=0).mean(dim=1)
            if relevance is None:
                relevance = torch.eye(fused.shape[-1], dtype=fused.dtype,
                                      device=fused.device).expand_as(fused)
            relevance = relevance + torch.matmul(fused, relevance)
        assert relevance is not None
        patches = relevance[:, row, adapter.num_prefix_tokens :]
        return patches.reshape(images.shape[0], *grid)

    return run


# --- integrated gradients ---------------------------------------------------------------


@_register("integrated_gradients")
def _integrated_gradients(
    model: nn.Module,
    adapter: ModelAdapter,
    name: str,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: Optional[int] = None,
    baseline: float = 0.0,
    sign: str = "absolute_value",
) -> _Run:
    signs = {
        "absolute_value": lambda total: total.abs(),
        "positive": lambda total: total.clamp(min=0),
    }
    if sign not in signs:
        raise ValueError(f"sign {sign!r}: choose one of {sorted(signs)}")
    if int(n_steps) < 2:
        raise ValueError(f"n_steps must be at least 2 (Captum's rule), got {n_steps}")
    gradients = IntegratedGradients(_logits(model, adapter))

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        attributions = gradients.attribute(
            images,
            baselines=float(baseline),
            target=targets,
            n_steps=int(n_steps),
            method=method,
            internal_batch_size=internal_batch_size or int(images.shape[0]),
        )
        return signs[sign](attributions.sum(dim=1))

    return run


# --- the grad-cam package ---------------------------------------------------------------


def _last_norm1(model: nn.Module) -> nn.Module:
    blocks = getattr(unwrap_model(model), "blocks", None)
    norm1 = getattr(blocks[-1], "norm1", None) if blocks is not None and len(blocks) else None
    if not isinstance(norm1, nn.Module):
        raise UnsupportedModelError(
            f"the grad-cam methods run on model.blocks[-1].norm1, which "
            f"{type(unwrap_model(model)).__name__} does not have; use a timm ViT"
        )
    return norm1


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


@_register("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam")
def _grad_cam(model: nn.Module, adapter: ModelAdapter, name: str) -> _Run:
    return _cam_run(model, adapter, name, batch_size=None)


@_register("scorecam")
def _score_cam(
    model: nn.Module, adapter: ModelAdapter, name: str, *, batch_size: int = 32
) -> _Run:
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return _cam_run(model, adapter, name, batch_size=int(batch_size))


def _cam_run(
    model: nn.Module, adapter: ModelAdapter, name: str, batch_size: Optional[int]
) -> _Run:
    """A grad-cam package method on ``model.blocks[-1].norm1``, returning its raw CAM.

    The package's ``BaseCAM.compute_cam_per_layer`` computes the grid-level CAM with
    ``get_cam_image`` (weighted activations summed over channels; EigenCAM: the first
    principal component), applies a ReLU, then min-max normalises and resizes it with
    cv2. The instance's ``get_cam_image`` is wrapped to keep its exact output, to which
    the same ReLU is applied here: the package's own computation, before normalisation.
    """
    cam_class = getattr(importlib.import_module("pytorch_grad_cam"), GRAD_CAM_CLASSES[name])
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = _last_norm1(model)
    prefix = adapter.num_prefix_tokens
    needs_gradients = name not in _GRADIENT_FREE_CAMS

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        def reshape(tokens: Tensor) -> Tensor:
            return tokens_to_grid(tokens, prefix, grid)

        raw: List[np.ndarray] = []
        inputs = images.detach().clone().requires_grad_(needs_gradients)
        with _left_as_found(model):
            cam = cam_class(model=model, target_layers=[layer], reshape_transform=reshape)
            try:
                if batch_size is not None:
                    cam.batch_size = batch_size
                package_cam_image = cam.get_cam_image

                def keep_raw(*args: Any, **kwargs: Any) -> np.ndarray:
                    image = package_cam_image(*args, **kwargs)
                    raw.append(image)
                    return image

                cam.get_cam_image = keep_raw
                cam(input_tensor=inputs,
                    targets=[ClassifierOutputTarget(int(t)) for t in targets])
            finally:
                cam.activations_and_grads.release()
        return torch.from_numpy(np.maximum(raw[0], 0))

    return run


__all__ = [
    "Explain",
    "Explainer",
    "GRAD_CAM_CLASSES",
    "METHODS",
    "available_methods",
    "make_explainer",
    "unavailable_methods",
]
