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
        if not model.device_ids:  # no GPU: the wrapper only runs the module
            return nn.DataParallel(inner)
        return nn.DataParallel(
            inner, device_ids=model.device_ids, output_device=model.output_device,
            dim=model.dim,
        )
    return model


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


__all__ = ["eager_calls", "eager_model", "unwrap_model"]
