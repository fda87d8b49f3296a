"""Hooks in, one forward, hooks out: the readout rows and values of every site."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..adapters.base import AttentionSite, RowSink


class ReadoutRecorder:
    """Collects ``(a0, v)`` for each site during one forward pass.

    Under ``DataParallel`` each replica reports from its own device; :meth:`gather`
    concatenates the pieces in the device order Captum uses for the gradients.
    """

    def __init__(self, sites: Sequence[AttentionSite]) -> None:
        self._sites = list(sites)
        self._rows: Dict[str, Dict[torch.device, Tuple[Tensor, Tensor]]] = {
            site.name: {} for site in self._sites
        }
        self._lock = threading.Lock()

    def sink(self, site: AttentionSite) -> RowSink:
        rows = self._rows[site.name]

        def record(a0: Tensor, v: Tensor) -> None:
            with self._lock:
                if a0.device in rows:
                    raise RuntimeError(
                        f"attention module {site.name} ran more than once in one forward "
                        "pass; DAAM explains each block once (is the module shared?)"
                    )
                rows[a0.device] = (a0, v)

        return record

    def gather(
        self, device_order: Optional[Sequence[torch.device]] = None
    ) -> List[Tuple[Tensor, Tensor]]:
        """``(a0, v)`` per site, in site order, batches concatenated over devices."""
        gathered = []
        for site in self._sites:
            rows = self._rows[site.name]
            if not rows:
                raise RuntimeError(
                    f"attention module {site.name} did not run in the forward pass; "
                    "DAAM can only explain blocks the model executes"
                )
            devices = list(device_order) if device_order is not None else list(rows)
            if len(devices) == 1:
                gathered.append(rows[devices[0]])
            else:
                a0 = torch.cat([rows[d][0].to(devices[0]) for d in devices])
                v = torch.cat([rows[d][1].to(devices[0]) for d in devices])
                gathered.append((a0, v))
        return gathered

    @property
    def devices(self) -> List[torch.device]:
        return list(next(iter(self._rows.values())).keys()) if self._rows else []


@contextmanager
def record_readout_rows(
    sites: Sequence[AttentionSite], token_index: int
) -> Iterator[ReadoutRecorder]:
    """Install every site's hooks for ``token_index``; always remove them on exit."""
    recorder = ReadoutRecorder(sites)
    handles = []
    try:
        for site in sites:
            handles.extend(site.install(token_index, recorder.sink(site)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
