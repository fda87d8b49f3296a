"""The wrappers around a model: ``DataParallel``, ``DistributedDataParallel`` and
``torch.compile``.

The adapters read the module inside them (:func:`unwrap_model`). An explanation runs
the model **eagerly** (:func:`eager_model`, :func:`eager_calls`): its forward hooks and
Captum's are Python side effects that a compiled graph would either break or recompile
for, so a compiled model is explained as its eager model and its graph is not used.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Tuple

from torch import nn

from .._core.capture import hold_locks

try:  # torch.compile's wrapper module (torch >= 2.0)
    from torch._dynamo.eval_frame import OptimizedModule
except ImportError:  # pragma: no cover - torch without dynamo
    OptimizedModule = ()  # type: ignore[assignment,misc]

_PARALLEL = (nn.DataParallel, nn.parallel.DistributedDataParallel)

#: The attribute ``nn.Module.compile()`` sets to the compiled ``__call__``.
_COMPILED_CALL = "_compiled_call_impl"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DataParallel`` / ``DistributedDataParallel`` and
    ``torch.compile`` wrappers, in any nesting."""
    while isinstance(model, _PARALLEL) or isinstance(model, OptimizedModule):
        model = model._orig_mod if isinstance(model, OptimizedModule) else model.module
    return model


def eager_model(model: nn.Module) -> nn.Module:
    """``model`` without its ``torch.compile`` wrappers, for an explanation.

    ``torch.compile(m)`` becomes ``m``; ``DataParallel(torch.compile(m))`` a new
    ``DataParallel(m)`` on the same devices (the wrapper holds no state of its own);
    ``DistributedDataParallel(torch.compile(m))`` becomes ``m`` (the explanation takes
    gradients of its own, not the wrapper's reduction). A model without compile
    wrappers is returned as it is.
    """
    if isinstance(model, OptimizedModule):
        return eager_model(model._orig_mod)
    if isinstance(model, _PARALLEL):
        inner = eager_model(model.module)
        if inner is model.module:
            return model
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return inner
        return data_parallel_like(model, inner)
    return model


def data_parallel_like(wrapper: nn.DataParallel, module: nn.Module) -> nn.DataParallel:
    """``module`` in a ``DataParallel`` with the devices, output device and dimension of
    ``wrapper`` (a wrapper without devices only runs its module, and so does this one)."""
    if not wrapper.device_ids:
        return nn.DataParallel(module)
    return nn.DataParallel(
        module,
        device_ids=wrapper.device_ids,
        output_device=wrapper.output_device,
        dim=wrapper.dim,
    )


@contextmanager
def eager_calls(model: nn.Module) -> Iterator[None]:
    """Run the modules of ``model`` compiled in place (``module.compile()``) eagerly
    inside the block; their compiled calls are put back on exit, also on error.

    The caller holds the model's lock (:func:`captum_daam._core.capture.model_lock`),
    so no other explanation sees the modules in between.
    """
    compiled: List[Tuple[nn.Module, object]] = [
        (module, module.__dict__[_COMPILED_CALL])
        for module in unwrap_model(model).modules()
        if module.__dict__.get(_COMPILED_CALL) is not None
    ]
    try:
        for module, _ in compiled:
            module.__dict__[_COMPILED_CALL] = None
        yield
    finally:
        for module, call in compiled:
            module.__dict__[_COMPILED_CALL] = call


@contextmanager
def model_lock(model: nn.Module) -> Iterator[None]:
    r"""Hold ``model``'s explanation lock inside the block.

    An explanation installs hooks on the model's modules for one forward and backward
    pass, and every forward of the model in that time reports to them. DAAM,
    SelfSupervisedDAAM and the baselines hold this lock for that pass, so explanations
    of one model from several threads run one after another, each giving the map it
    gives alone; different models do not wait for each other. Take it around your own
    forward passes of a model that other threads explain at the same time.

    Args:
        model: The model, possibly in ``DataParallel`` / ``DistributedDataParallel`` or
            ``torch.compile`` (the lock is the wrapped module's).

    Returns:
        A context manager; the lock is re-entrant within one thread and held by weak
        reference (it goes with the model).

    Example::

        >>> import timm, torch
        >>> from captum_daam import model_lock
        >>> model = timm.create_model("deit_tiny_patch16_224").eval()
        >>> with model_lock(model):     # in a thread beside others calling DAAM
        ...     logits = model(torch.randn(1, 3, 224, 224))
        >>> logits.shape
        torch.Size([1, 1000])
    """
    with hold_locks([unwrap_model(model)]):
        yield


@contextmanager
def explanation_pass(model: nn.Module) -> Iterator[nn.Module]:
    """One explanation's forward and backward: ``model``'s lock held (as
    :func:`model_lock`) and its modules compiled in place run eagerly (as
    :func:`eager_calls`). What DAAM, SelfSupervisedDAAM and every baseline run inside.

    Args:
        model: The model as the user gave it (wrappers and ``torch.compile`` allowed).

    Yields:
        The module to run: ``model`` without its ``torch.compile`` wrappers.
    """
    base = unwrap_model(model)
    with hold_locks([base]), eager_calls(base):
        yield eager_model(model)


__all__ = ["eager_calls", "eager_model", "explanation_pass", "model_lock", "unwrap_model"]
