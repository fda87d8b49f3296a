"""Hooks in, one forward, hooks out: what every site's attention computed.

In the readout mode a site reports ``(a0, v)``: the readout row of its attention and its
values. In the all-queries mode it reports a :class:`~captum_daam._core.sites.QueryAttention`
(queries, keys, values, bias) from which the full attention is recomputed after the
backward pass, one layer at a time.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

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

    def sink(self, site: AttentionSite):
        """The callback ``site``'s hooks report to: ``sink(a0, v)`` or ``sink(record)``."""
        records = self._records[site.name]

        def record(*parts: Any) -> None:
            item = parts[0] if len(parts) == 1 else tuple(parts)
            device = _device(item)
            with self._lock:
                if device in records:
                    raise RuntimeError(
                        f"attention module {site.name} ran more than once in one forward "
                        "pass; DAAM explains each block once (is the module shared?)"
                    )
                records[device] = item

        return record

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
    for the all-queries mode; always remove them on exit."""
    recorder = AttentionRecorder(sites)
    handles = []
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

