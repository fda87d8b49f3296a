"""``torch.distributed`` as the evaluation harness, the command line and the memory bank
use it: the rank and world size of the default process group, joining one that
``torchrun`` describes, and waiting for the other processes.

Without a process group everything here degrades to one process (rank 0 of 1).
"""

from __future__ import annotations

import os
from typing import Tuple

import torch


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


__all__ = ["barrier", "join_from_environment", "launched_by_torchrun", "rank_and_world"]
