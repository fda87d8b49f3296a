"""``torch.distributed`` as the evaluation harness, the command line and the memory bank
use it: the rank and world size of the default process group, joining one that
``torchrun`` describes, waiting for the other processes, splitting data into one shard
per rank and gathering every rank's rows of a tensor, in order.

Without a process group everything here degrades to one process (rank 0 of 1).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler, Subset

from .errors import InvalidInputError

#: Rows per ``all_gather`` step of :func:`all_gather_rows`.
GATHER_ROWS = 65536


def rank_and_world() -> Tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group (``RANK`` and ``WORLD_SIZE``,
    as ``torchrun`` sets them)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def join_from_environment(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes, when it does, and return the
    device this process should use: ``device``, or on CUDA the ``LOCAL_RANK``-th GPU.

    The backend is nccl where CUDA is available, gloo otherwise. Without ``torchrun``
    nothing happens and ``device`` is returned.
    """
    if not launched_by_torchrun():
        return device
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def barrier() -> None:
    """Wait for every process of the default process group; nothing without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def shard_bounds(count: int, rank: int, world: int) -> Tuple[int, int]:
    """``[lo, hi)``: rank ``rank``'s contiguous share of ``count`` items among ``world``
    ranks; the shards differ by at most one item and cover every item once, in order.

    Example::

        >>> [shard_bounds(7, r, 2) for r in range(2)]
        [(0, 3), (3, 7)]
    """
    return rank * count // world, (rank + 1) * count // world


def shard_loader(
    loader: DataLoader, rank: int, world: int, purpose: str = "a distributed run"
) -> Tuple[DataLoader, Tensor]:
    """Rank ``rank``'s contiguous shard of a sequential ``loader``, loaded with the same
    settings (batch size, workers, collate function, ...), and its dataset indices.

    Args:
        loader: A ``DataLoader`` over a map-style dataset with ``shuffle=False``, a
            ``batch_size`` and ``drop_last=False``.
        rank: This process's rank.
        world: The number of ranks.
        purpose: How error messages name the caller.

    Returns:
        ``(shard, indices)``: the shard's loader and the dataset index of each of its
        items, (n,) long.
    """
    if isinstance(loader.dataset, IterableDataset):
        raise InvalidInputError(
            f"{purpose} needs a DataLoader over a map-style dataset, so that each rank "
            "can load its own shard"
        )
    if not isinstance(loader.sampler, SequentialSampler) or loader.batch_size is None:
        raise InvalidInputError(
            f"{purpose} shards a DataLoader with shuffle=False and a batch_size (a "
            "loader whose sampler is a DistributedSampler is sharded already); this "
            f"loader has a {type(loader.sampler).__name__} and batch_size="
            f"{loader.batch_size}"
        )
    if loader.drop_last:
        raise InvalidInputError(
            f"{purpose} cannot shard a loader with drop_last=True: it would leave items "
            "out; use drop_last=False"
        )
    lo, hi = shard_bounds(len(loader.dataset), rank, world)  # type: ignore[arg-type]
    shard = DataLoader(
        Subset(loader.dataset, range(lo, hi)),
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )
    return shard, torch.arange(lo, hi)


def all_gather_rows(
    rows: Tensor,
    device: Optional[Union[str, torch.device]] = None,
    rows_per_step: int = GATHER_ROWS,
) -> Tensor:
    """Every rank's ``rows`` on every rank, concatenated in rank order.

    The ranks may hold different numbers of rows (none too: a rank without rows passes
    any tensor with 0 rows and the same number of dimensions, e.g. ``torch.empty(0,
    0)``, and takes the others' row shape). Shards are padded to the longest and gathered
    ``rows_per_step`` rows at a time with ``all_gather`` (on the GPU under NCCL, on the
    CPU otherwise), so the communication buffers stay small however many rows there are.
    Without a process group, ``rows`` on ``device``.

    Args:
        rows: This rank's rows, (n, ...), the same dtype on every rank.
        device: Where the result is kept; default: ``rows.device``.
        rows_per_step: Rows per rank and ``all_gather`` step.

    Returns:
        *Tensor*: (sum of n, ...), rank 0's rows first, on ``device``.

    Example::

        >>> features = all_gather_rows(local_features, device="cpu")   # every rank
    """
    device = rows.device if device is None else torch.device(device)
    rank, world = rank_and_world()
    if world == 1:
        return rows.to(device)
    dist = torch.distributed
    comm = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    header = torch.tensor(rows.shape, dtype=torch.long, device=comm)
    headers = [torch.zeros_like(header) for _ in range(world)]
    dist.all_gather(headers, header)
    sizes = [int(h[0]) for h in headers]
    shapes = {tuple(h[1:].tolist()) for h, s in zip(headers, sizes, strict=True) if s > 0}
    if len(shapes) > 1:
        raise RuntimeError(f"ranks produced rows of different shapes {sorted(shapes)}")
    shape = shapes.pop() if shapes else tuple(rows.shape[1:])
    out = torch.empty(sum(sizes), *shape, dtype=rows.dtype, device=device)
    offsets = [sum(sizes[:r]) for r in range(world)]
    longest = max(sizes)
    for start in range(0, longest, rows_per_step):
        count = min(rows_per_step, longest - start)
        piece = torch.zeros(count, *shape, dtype=rows.dtype, device=comm)
        mine = max(0, min(count, sizes[rank] - start))
        if mine:
            piece[:mine] = rows[start : start + mine].to(comm)
        pieces = [torch.empty_like(piece) for _ in range(world)]
        dist.all_gather(pieces, piece)
        for r in range(world):
            valid = max(0, min(count, sizes[r] - start))
            if valid:
                at = offsets[r] + start
                out[at : at + valid] = pieces[r][:valid].to(device)
    return out


def dataset_order(indices: Tensor) -> Optional[Tensor]:
    """The rows to take, in order, to put gathered items in dataset order, each once.

    Args:
        indices: The dataset index of every gathered row, (M,); -1 where unknown.

    Returns:
        *Tensor* or ``None``: positions sorting the rows by dataset index and dropping
        repeats (the padding duplicates of a ``DistributedSampler``); ``None`` where the
        rows are already in strictly increasing order (contiguous shards: no copy
        needed) or some index is unknown.
    """
    if bool((indices[1:] > indices[:-1]).all()) or not bool((indices >= 0).all()):
        return None
    order = torch.argsort(indices, stable=True)
    ordered = indices[order]
    keep = torch.ones_like(ordered, dtype=torch.bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return order[keep]


__all__ = [
    "GATHER_ROWS",
    "all_gather_rows",
    "barrier",
    "dataset_order",
    "join_from_environment",
    "launched_by_torchrun",
    "rank_and_world",
    "shard_bounds",
    "shard_loader",
]
