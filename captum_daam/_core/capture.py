"""Hooks in, one forward, hooks out: what every site's attention computed.

In the readout mode a site reports ``(a0, v)``: the readout row of its attention and its
values. In the all-queries mode it reports a :class:`~captum_daam._core.sites.QueryAttention`
(queries, keys, values, bias) from which the full attention is recomputed after the
backward pass, one layer at a time.

The hooks live on the model's modules, so every forward of the model reports to them
while they are installed. :func:`captum_daam.model_lock` serialises the explanations of
one model (:func:`hold_locks`: re-entrant, one per module, held by weak reference);
:func:`record_attention` also holds the locks of the sites it hooks, so two recordings of
the same sites never interleave.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .sites import AttentionSite, QueryAttention

#: What a site reports in one forward on one device.
Record = Any  # Tuple[Tensor, Tensor] (readout mode) or QueryAttention (all-queries mode)


def _device(record: Record) -> torch.device:
    return record.v.device if isinstance(record, QueryAttention) else record[0].device


def _cat(parts: List[Record]) -> Record:
    if isinstance(parts[0], QueryAttention):
        return QueryAttention.cat(parts)
    device = parts[0][0].device
    return tuple(torch.cat([part[i].to(device) for part in parts]) for i in range(2))


#: One re-entrant lock per module that has been locked; an entry goes with its module.
_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _lock_of(module: nn.Module) -> threading.RLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


@contextmanager
def hold_locks(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Hold the re-entrant locks of ``modules`` inside the block.

    Taken in one global order (by ``id``), so two threads locking overlapping sets never
    wait for each other in a circle. Explainers lock the module their adapter describes
    (:func:`captum_daam.model_lock`) for the whole forward and backward pass that needs
    their hooks; the hooks themselves take no lock, so ``DataParallel``'s worker threads
    report freely.
    """
    unique = {id(module): module for module in modules}
    with ExitStack() as stack:
        for key in sorted(unique):
            stack.enter_context(_lock_of(unique[key]))
        yield


def lock_registry_size() -> int:
    """How many modules hold a lock now (entries go with their modules)."""
    with _LOCKS_GUARD:
        return len(_LOCKS)


class AttentionRecorder:
    """Collects each site's record during one forward pass.

    Under ``DataParallel`` each replica reports from its own device; :meth:`gather`
    concatenates the pieces in the device order Captum uses for the gradients.
    """

    def __init__(self, sites: Sequence[AttentionSite]) -> None:
        self._sites = list(sites)
        self._records: Dict[str, Dict[torch.device, Record]] = {
            site.name: {} for site in self._sites
        }
        self._lock = threading.Lock()
        #: Per site and device, the thread whose forward reported (for the messages).
        self._threads: Dict[Tuple[str, torch.device], int] = {}

    def sink(self, site: AttentionSite):
        """The callback ``site``'s hooks report to: ``sink(a0, v)`` or ``sink(record)``."""
        records = self._records[site.name]

        def record(*parts: Any) -> None:
            item = parts[0] if len(parts) == 1 else tuple(parts)
            device = _device(item)
            thread = threading.get_ident()
            with self._lock:
                if device in records:
                    raise RuntimeError(
                        self._twice(site.name, self._threads[site.name, device], thread)
                    )
                records[device] = item
                self._threads[site.name, device] = thread

        return record

    @staticmethod
    def _twice(name: str, first_thread: int, thread: int) -> str:
        if first_thread != thread:
            return (
                f"attention module {name} ran in two forward passes at once, from two "
                "threads, while DAAM's hooks were installed: another thread ran the "
                "same model during the explanation. Explanations of one model are "
                "serialised; wrap your own forward passes of it in "
                "captum_daam.model_lock(model), or give each thread its own copy"
            )
        return (
            f"attention module {name} ran more than once in one forward pass; DAAM "
            "explains each block once (is the module shared?)"
        )

    def gather(self, device_order: Optional[Sequence[torch.device]] = None) -> List[Record]:
        """One record per site, in site order, batches concatenated over devices."""
        gathered = []
        for site in self._sites:
            records = self._records[site.name]
            if not records:
                raise RuntimeError(
                    f"attention module {site.name} did not run in the forward pass; "
                    "DAAM can only explain blocks the model executes"
                )
            devices = list(device_order) if device_order is not None else list(records)
            parts = [records[d] for d in devices]
            gathered.append(parts[0] if len(parts) == 1 else _cat(parts))
        return gathered

    @property
    def devices(self) -> List[torch.device]:
        return list(next(iter(self._records.values())).keys()) if self._records else []


@contextmanager
def record_attention(
    sites: Sequence[AttentionSite], token_index: Optional[int]
) -> Iterator[AttentionRecorder]:
    """Install every site's hooks, for readout token ``token_index`` or, with ``None``,
    for the all-queries mode; always remove them on exit.

    The sites' module locks are held throughout, so recordings of the same sites from
    several threads run one after another; an explainer also holds its model's lock,
    which covers every module of the model.
    """
    recorder = AttentionRecorder(sites)
    handles: List[Any] = []
    with hold_locks(site.module for site in sites):
        try:
            for site in sites:
                if token_index is None:
                    if site.install_queries is None:
                        raise ValueError(f"{site.name} has no all-queries decomposition")
                    handles.extend(site.install_queries(recorder.sink(site)))
                else:
                    handles.extend(site.install(token_index, recorder.sink(site)))
            yield recorder
        finally:
            for handle in handles:
                handle.remove()
