"""DAAM for Quantus: an ``explain_func`` that Quantus's metrics call as they call
``quantus.explain``.

Quantus (https://github.com/understandable-machine-intelligence-lab/Quantus) evaluates
explanations with metrics that call ``explain_func(model=model, inputs=x_batch,
targets=y_batch, **explain_func_kwargs)`` on numpy batches, channel first, and expect a
numpy array of attributions back. :func:`explain_func` is that function for DAAM, its
all-queries mode and :class:`~captum_daam.SelfSupervisedDAAM`: numpy arrays or tensors in,
the map upsampled to the input size out, one channel, ``(N, 1, H, W)``, the same values
as the first channel of :class:`~captum_daam.DAAMInput`'s attribution.

Quantus itself is not imported here: the function needs nothing from it.
"""

from __future__ import annotations

import inspect
from typing import Any, List, Optional, Sequence, Union, cast

import numpy as np
import torch
from torch import Tensor, nn

from .adapters import get_adapter
from .attr import DAAM
from .errors import InvalidInputError, InvalidInputTypeError
from .features import FeatureFn
from .input_space import to_input_space
from .memory_bank import MemoryBank
from .self_supervised import SelfSupervisedDAAM

#: The explainers :func:`explain_func` runs, by ``method``.
METHODS = ("daam", "daam_all", "self_supervised")
#: How the patch-grid map is upsampled (``LayerAttribution.interpolate``'s modes).
INTERPOLATE_MODES = ("bilinear", "nearest", "bicubic", "area")

ArrayLike = Union[np.ndarray, Tensor]
Layers = Union[int, nn.Module, Sequence[Union[int, nn.Module]], None]


def explain_func(
    model: nn.Module,
    inputs: ArrayLike,
    targets: Union[ArrayLike, Sequence[int], int, None] = None,
    method: str = "daam",
    layer: Layers = None,
    token: Optional[str] = None,
    queries: Optional[str] = None,
    memory_bank: Optional[MemoryBank] = None,
    k: Optional[int] = None,
    temperature: Optional[float] = None,
    feature_fn: Optional[FeatureFn] = None,
    relu_weights: Optional[bool] = None,
    explain_predicted: bool = False,
    interpolate_mode: str = "bilinear",
    device: Optional[Union[str, torch.device]] = None,
    channel_first: bool = True,
    **unknown: Any,
) -> np.ndarray:
    r"""Explain a batch with DAAM for Quantus: numpy in, numpy attributions out.

    Pass it to any Quantus metric as ``explain_func`` and its options as
    ``explain_func_kwargs``; the metric calls ``explain_func(model=model, inputs=x_batch,
    targets=y_batch, **explain_func_kwargs)`` (adding ``device`` when the metric gets
    one). The final accumulated map ``D_B`` is upsampled from the patch grid to the
    images' size with ``LayerAttribution.interpolate``, exactly as
    :class:`~captum_daam.DAAMInput` does, and returned with one channel.

    The model is left exactly as found: it is neither moved nor put in eval mode (Quantus's
    own ``explain`` does both); the inputs go to the model's device.

    Args:
        model: A supported Vision Transformer (see :class:`~captum_daam.DAAM`), on the
            device it is to run on.
        inputs: Images (N, C, H, W) as a numpy array or a tensor, preprocessed as the
            model expects; (N, H, W, C) with ``channel_first=False``. Numpy arrays are
            cast to the dtype the model computes in.
        targets: Classes to explain, one per image (numpy array, tensor or list, (N,) or
            (N, 1)) or one for all; ``None`` explains each image's predicted class
            (the memory bank's voted class for ``"self_supervised"``).
        method: ``"daam"`` (default: :class:`~captum_daam.DAAM`, the readout token's
            row where the model has one), ``"daam_all"`` (DAAM's all-queries mode,
            ``queries="all"``) or ``"self_supervised"``
            (:class:`~captum_daam.SelfSupervisedDAAM`; needs ``memory_bank``, and the
            targets are labels of the bank).
        layer: ``None`` explains every block. Attention modules, or integer indices
            into the explained attention layers (0 the input side, -1 the last), restrict
            DAAM to those blocks. Indices also fit the copies of the model that
            randomisation metrics explain.
        token: Readout token, ``"cls"`` (default) or ``"dist"`` for a distilled DeiT.
        queries: As for :class:`~captum_daam.DAAM`: ``"readout"``, ``"all"`` or
            ``None`` (the model's default); ``method="daam_all"`` sets ``"all"``.
        memory_bank: The :class:`~captum_daam.MemoryBank` of ``"self_supervised"``.
        k: Neighbours per image for ``"self_supervised"`` (default 20).
        temperature: Vote temperature for ``"self_supervised"`` (default 0.07).
        feature_fn: Feature function for ``"self_supervised"`` (default: the adapter's
            class-token embedding).
        relu_weights: For ``"self_supervised"``: ``True`` takes the positive part of the
            channel weights (default ``False``, signed).
        explain_predicted: ``True`` ignores ``targets`` and explains the predicted (or
            voted) class of each image; default ``False``.
        interpolate_mode: Upsampling of the patch-grid map: ``"bilinear"`` (default),
            ``"nearest"``, ``"bicubic"`` or ``"area"``.
        device: The device Quantus names (``"cpu"``, ``"cuda"``, ...). It must be the
            model's device: the model is not moved. ``None`` uses the model's device.
        channel_first: ``True`` (default, what Quantus's metrics pass) for (N, C, H, W)
            inputs; ``False`` for (N, H, W, C) inputs, answered as (N, H, W, 1).

    Returns:
        *np.ndarray* of **attributions**: (N, 1, H, W) (or (N, H, W, 1) for
        ``channel_first=False``), non-negative, on the CPU, in float32 (float64 for a
        float64 model).

    Example::

        >>> import numpy as np
        >>> from captum_daam.quantus import explain_func
        >>> from captum_daam.zoo import load_default_model
        >>> model = load_default_model()  # the embedded model: 64 px images, 6 classes
        >>> x = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
        >>> explain_func(model, x, np.array([0, 1, 2, 3])).shape
        (4, 1, 64, 64)

    With Quantus (``pip install 'captum-daam[quantus]'``), as any metric's
    ``explain_func``:

    .. code-block:: python

        import quantus

        metric = quantus.FaithfulnessCorrelation(nr_runs=10, subset_size=64)
        scores = metric(model=model, x_batch=x, y_batch=y, device="cpu",
                        explain_func=explain_func,
                        explain_func_kwargs={"method": "daam", "layer": [-2, -1]})
    """
    if unknown:
        raise InvalidInputTypeError(
            f"explain_func got unknown option(s) {sorted(unknown)}; its options are "
            f"{_OPTIONS} (check explain_func_kwargs)"
        )
    _check_method_options(
        method, interpolate_mode, queries, memory_bank, k, temperature, feature_fn, relu_weights
    )
    layers = _resolve_layers(model, layer)
    explainer: Union[DAAM, SelfSupervisedDAAM]
    if method == "self_supervised":
        explainer = SelfSupervisedDAAM(
            model,
            cast(MemoryBank, memory_bank),
            k=20 if k is None else k,
            temperature=0.07 if temperature is None else temperature,
            layer=layers,
            feature_fn=feature_fn,
            relu_weights=bool(relu_weights),
            queries=queries,
        )
    else:
        explainer = DAAM(model, layers, queries="all" if method == "daam_all" else queries)
    images = _images(
        inputs, channel_first, _run_device(model, device), explainer.adapter.input_dtype
    )
    target = None if explain_predicted else _targets(targets)
    maps = explainer.attribute(images, target=target, token=token)
    attributions = to_input_space(cast(Tensor, maps), images[:, :1], interpolate_mode).detach()
    if attributions.dtype not in (torch.float32, torch.float64):
        attributions = attributions.float()
    if not channel_first:
        attributions = attributions.permute(0, 2, 3, 1)
    return attributions.cpu().numpy()


#: The keyword options of :func:`explain_func`, named when an unknown one is passed.
_OPTIONS = list(inspect.signature(explain_func).parameters)[3:-1]


def _check_method_options(
    method: str,
    interpolate_mode: str,
    queries: Optional[str],
    memory_bank: Optional[MemoryBank],
    k: Optional[int],
    temperature: Optional[float],
    feature_fn: Optional[FeatureFn],
    relu_weights: Optional[bool],
) -> None:
    """Refuse an unknown method, and options the chosen method would silently ignore."""
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    if interpolate_mode not in INTERPOLATE_MODES:
        raise InvalidInputError(
            f"interpolate_mode must be one of {INTERPOLATE_MODES}, got {interpolate_mode!r}"
        )
    if method == "daam_all" and queries not in (None, "all"):
        raise InvalidInputError(
            f"method='daam_all' is DAAM with queries='all', got queries={queries!r}; "
            "use method='daam' with queries='readout'"
        )
    if method == "self_supervised":
        if memory_bank is None:
            raise InvalidInputError(
                "method='self_supervised' needs a memory bank: pass "
                "explain_func_kwargs={'method': 'self_supervised', 'memory_bank': "
                "MemoryBank.build(model, loader)}"
            )
        return
    given = [
        name
        for name, value in (
            ("memory_bank", memory_bank),
            ("k", k),
            ("temperature", temperature),
            ("feature_fn", feature_fn),
            ("relu_weights", relu_weights),
        )
        if value is not None
    ]
    if given:
        raise InvalidInputError(
            f"{', '.join(given)} only apply to method='self_supervised', got "
            f"method={method!r}; drop them or choose method='self_supervised'"
        )


def _resolve_layers(model: nn.Module, layer: Layers) -> Optional[List[nn.Module]]:
    """Attention modules for ``layer``: modules as given, integers as indices into the
    attention layers DAAM explains by default."""
    if layer is None:
        return None
    chosen = [layer] if isinstance(layer, (int, nn.Module)) else list(layer)
    if not any(isinstance(item, int) and not isinstance(item, bool) for item in chosen):
        return chosen  # type: ignore[return-value]
    sites = get_adapter(model).sites
    modules = []
    for item in chosen:
        if isinstance(item, bool) or not isinstance(item, (int, nn.Module)):
            raise InvalidInputTypeError(
                f"layer entries must be attention modules or integer indices, got "
                f"{type(item).__name__}"
            )
        if isinstance(item, nn.Module):
            modules.append(item)
        elif not -len(sites) <= item < len(sites):
            raise InvalidInputError(
                f"layer index {item} out of range: the model has {len(sites)} attention "
                f"layers to explain; pass indices in [{-len(sites)}, {len(sites)})"
            )
        else:
            modules.append(sites[item].module)
    return modules


def _run_device(model: nn.Module, device: Optional[Union[str, torch.device]]) -> torch.device:
    """The model's device, checked against the device Quantus names."""
    first = next(iter(model.parameters()), None)
    own = first.device if first is not None else torch.device("cpu")
    if device is None:
        return own
    try:
        named = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(
            f"device {device!r} is not a torch device ({error}); pass e.g. 'cpu' or 'cuda'"
        ) from None
    if named.type != own.type or (named.index is not None and named.index != own.index):
        raise InvalidInputError(
            f"device={str(named)!r} but the model is on {own}; explain_func leaves the "
            f"model where it is: move it first (model.to({str(named)!r})) or pass "
            f"device={str(own)!r}"
        )
    return own


def _images(
    inputs: ArrayLike, channel_first: bool, device: torch.device, dtype: Optional[torch.dtype]
) -> Tensor:
    """``inputs`` as a channel-first image tensor on ``device`` in the model's dtype."""
    if isinstance(inputs, np.ndarray):
        if inputs.dtype == object or not (
            np.issubdtype(inputs.dtype, np.number) or inputs.dtype == np.bool_
        ):
            raise InvalidInputTypeError(f"inputs must be a numeric array, got dtype {inputs.dtype}")
        images = torch.from_numpy(np.ascontiguousarray(inputs))
        dtype = dtype or torch.get_default_dtype()
    elif isinstance(inputs, Tensor):
        images = inputs.detach()
    else:
        raise InvalidInputTypeError(
            f"inputs must be a numpy array or a torch tensor of images, got {type(inputs).__name__}"
        )
    if images.dim() != 4:
        layout = "(N, C, H, W)" if channel_first else "(N, H, W, C)"
        raise InvalidInputError(
            f"expected images {layout}, got shape {tuple(images.shape)}; Quantus passes "
            "channel-first batches, pass channel_first=False for channel-last ones"
        )
    if not channel_first:
        images = images.permute(0, 3, 1, 2)
    if dtype is None and not images.is_floating_point():
        dtype = torch.get_default_dtype()
    return images.to(device=device, dtype=dtype or images.dtype).contiguous()


def _targets(targets: Union[ArrayLike, Sequence[int], int, None]) -> Any:
    """Quantus's ``y_batch`` ((N,) or (N, 1) array) as a Captum target."""
    if isinstance(targets, np.ndarray):
        if not np.issubdtype(targets.dtype, np.integer):
            raise InvalidInputTypeError(
                f"targets have dtype {targets.dtype}; pass class indices as integers, "
                "e.g. y_batch.astype(int)"
            )
        return torch.from_numpy(np.ascontiguousarray(targets)).reshape(-1).long()
    if isinstance(targets, Tensor) and targets.dim() > 1:
        return targets.reshape(-1)
    return targets


__all__ = ["INTERPOLATE_MODES", "METHODS", "explain_func"]
