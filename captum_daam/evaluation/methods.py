"""The explanation methods of the evaluation harness, behind one registry.

Every method is built by :func:`make_explainer` into an :class:`Explainer`: a callable
``explain(images, targets) -> maps`` that explains a batch for given classes, so that the
harness runs DAAM and its peers on the same images, targets and weights in one run. The
methods themselves are the package's public ones (:class:`captum_daam.DAAM`,
:mod:`captum_daam.baselines`, Captum's ``IntegratedGradients``); this module only names
them, binds their options and checks the batch.

Maps are float32 on the CPU, non-negative, one per image, (N, 1, rows, cols) on the
patch grid of the model's adapter, except ``"integrated_gradients"``, which is at pixel
resolution (N, 1, H, W): the shape of Captum's layer methods and of ``DAAM.attribute``.

============================  =============================================================
``"daam"``                    :class:`captum_daam.DAAM`, the final accumulated map ``D_B``.
``"daam_all"``                :class:`captum_daam.DAAM` with ``queries="all"`` (every query row).
``"gradcam"`` ...             :class:`captum_daam.baselines.PackageCAM`: the ``grad-cam``
``"scorecam"``                package (extra ``eval``), GradCAM, GradCAM++, XGradCAM,
                              LayerCAM, EigenCAM, ScoreCAM on the adapter's Grad-CAM layer
                              (the last block's ``norm1``), prefix tokens dropped, patches on
                              the grid; the raw grid-level CAM.
``"rollout"``                 :func:`captum_daam.attention_rollout` (Abnar & Zuidema, 2020).
``"chefer"``                  :func:`captum_daam.gradient_weighted_rollout`
                              (Chefer et al., ICCV 2021): ``R = I``; per block
                              ``Ā = mean_h ReLU(∇A ⊙ A)``, ``R = R + Ā R``; the readout row
                              of ``R`` over the patches.
``"raw_attention"``           :func:`captum_daam.raw_attention`: the last block's
                              readout-token attention over the patches, mean over heads.
``"integrated_gradients"``    Captum ``IntegratedGradients`` from a constant baseline,
                              summed over channels, absolute value (or positive part).
``"uniform"``                 Ones on the grid: the chance reference.
============================  =============================================================
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from captum.attr import IntegratedGradients
from torch import Tensor, nn

from ..adapters import get_adapter, model_lock
from ..adapters.base import ModelAdapter
from ..attr import DAAM
from ..baselines import (
    GRAD_CAM_CLASSES,
    PackageCAM,
    attention_rollout,
    check_batch,
    grad_cam_package_error,
    gradient_weighted_rollout,
    raw_attention,
)
from ..errors import InvalidInputError

#: ``explain(images (N, C, H, W), targets (N,) long) -> maps (N, 1, h, w)``, float32, CPU.
Explain = Callable[[Tensor, Tensor], Tensor]

#: What a builder returns: ``run(images, targets, grid) -> maps (N, 1, h, w)`` (any dtype
#: or device).
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

    Example::

        >>> from captum_daam.evaluation.methods import unavailable_methods
        >>> unavailable_methods()
        {}
    """
    reason = grad_cam_package_error()
    return {} if reason is None else {name: reason for name in GRAD_CAM_CLASSES}


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
        warnings.warn(f"leaving out {', '.join(missing)}: {'; '.join(reasons)}", stacklevel=2)
    return tuple(name for name in METHODS if name not in missing)


class Explainer:
    """One explanation method bound to a model: ``explainer(images, targets)``.

    Built by :func:`make_explainer`. Validates the batch and the targets
    (:func:`captum_daam.baselines.check_batch`), runs the method with gradients enabled
    (so it also works inside ``torch.no_grad()``), and returns detached float32 maps on
    the CPU.

    Attributes:
        name: The method's name in :data:`METHODS`.
        adapter: The model's adapter.
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
                for all, is accepted too); required.

        Returns:
            Maps (N, 1, rows, cols) on the patch grid, or (N, 1, H, W) for
            ``"integrated_gradients"``; float32, CPU, non-negative.
        """
        images, targets, grid = check_batch(self.name, images, targets, self.adapter)
        with torch.enable_grad():
            maps = self._run(images, targets, grid)
        return maps.detach().to(device="cpu", dtype=torch.float32)


def make_explainer(name: str, model: nn.Module, **options: Any) -> Explainer:
    r"""Bind the explanation method ``name`` to ``model``.

    Args:
        name: One of :data:`METHODS` (see :func:`available_methods`).
        model: A Vision Transformer classifier in eval mode, supported by
            :func:`captum_daam.adapters.get_adapter`. The grad-cam family needs the
            adapter's Grad-CAM layer (the last block's ``norm1``: timm ViTs, DeiT, BEiT,
            EVA); ``"rollout"`` and ``"chefer"`` need a timm ``VisionTransformer``. The
            model is left exactly as found: no hooks, flags, ``requires_grad`` or
            ``.grad`` changed.
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
        *Explainer*: ``explain(images, targets) -> maps`` (N, 1, rows, cols), float32,
        CPU, non-negative; (N, 1, H, W) for ``"integrated_gradients"``.

    Example::

        >>> import timm, torch
        >>> from captum_daam.evaluation.methods import make_explainer
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()
        >>> explain = make_explainer("chefer", model)
        >>> maps = explain(torch.randn(2, 3, 224, 224), torch.tensor([3, 7]))
        >>> maps.shape                                       # (2, 1, 14, 14)
    """
    if name not in METHODS:
        raise InvalidInputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    missing = unavailable_methods()
    if name in missing:
        raise ImportError(f"method {name!r} is not available: {missing[name]}")
    builder = _BUILDERS[name]
    accepted = [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidInputError(
            f"method {name!r} takes the options {accepted or 'none'}, not {unknown}"
        )
    adapter = get_adapter(model)
    run = builder(model, adapter, name, **options)
    return Explainer(name, adapter, run, options)


# --- the builders: name and options -> the package's public method ------------------------


@_register("daam", "daam_all")
def _daam(
    model: nn.Module, adapter: ModelAdapter, name: str, *, token: Optional[str] = None
) -> _Run:
    """``"daam"``: the model's natural mode (readout for class-token models);
    ``"daam_all"``: the all-queries mode (docs/method.md)."""
    daam = DAAM(model, queries="all" if name == "daam_all" else None)

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        return daam.attribute(images, target=targets, token=token)

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
        return attention_rollout(
            model, images, head_fusion=head_fusion, residual=residual, token=token
        )

    return run


@_register("chefer")
def _chefer(
    model: nn.Module, adapter: ModelAdapter, name: str, *, token: Optional[str] = None
) -> _Run:
    adapter.readout_token_index(token)  # an unknown token fails here, not per batch

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        return gradient_weighted_rollout(model, images, targets, token=token)

    return run


@_register("raw_attention")
def _raw_attention(
    model: nn.Module, adapter: ModelAdapter, name: str, *, token: Optional[str] = None
) -> _Run:
    adapter.readout_token_index(token)

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        return raw_attention(model, images, token=token)

    return run


@_register("uniform")
def _uniform(model: nn.Module, adapter: ModelAdapter, name: str) -> _Run:
    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        return torch.ones(images.shape[0], 1, *grid)

    return run


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
        raise InvalidInputError(f"sign {sign!r}: choose one of {sorted(signs)}")
    if int(n_steps) < 2:
        raise InvalidInputError(f"n_steps must be at least 2 (Captum's rule), got {n_steps}")

    def logits(images: Tensor) -> Tensor:
        return adapter.logits(model(images))  # type: ignore[return-value]

    gradients = IntegratedGradients(logits)

    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        # No hooks of its own, but its forwards must not pass through another thread's.
        with model_lock(model):
            attributions = gradients.attribute(
                images,
                baselines=float(baseline),
                target=targets,
                n_steps=int(n_steps),
                method=method,
                internal_batch_size=internal_batch_size or int(images.shape[0]),
            )
        return signs[sign](attributions.sum(dim=1, keepdim=True))

    return run


@_register("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam")
def _grad_cam(model: nn.Module, adapter: ModelAdapter, name: str) -> _Run:
    return _package_run(PackageCAM(model, name))


@_register("scorecam")
def _score_cam(model: nn.Module, adapter: ModelAdapter, name: str, *, batch_size: int = 32) -> _Run:
    return _package_run(PackageCAM(model, name, batch_size=batch_size))


def _package_run(cam: PackageCAM) -> _Run:
    def run(images: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
        return cam.attribute(images, targets)

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
