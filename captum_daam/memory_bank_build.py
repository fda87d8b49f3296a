"""Embedding a labelled dataset for a memory bank, on one process or on every rank.

:func:`embed_dataset` is what :meth:`captum_daam.MemoryBank.build` runs: the backbone's
features of every image, L2-normalised, with their labels, in batches under
``torch.no_grad()``. Under a ``torch.distributed`` process group each rank embeds its
own shard and the shards are gathered (:mod:`captum_daam.distributed`), so every rank
gets the whole dataset, in dataset order.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data.distributed import DistributedSampler

from ._core.knn import l2_normalise
from .adapters import unwrap_model
from .distributed import (
    all_gather_rows,
    dataset_order,
    rank_and_world,
    shard_bounds,
    shard_loader,
)
from .errors import InvalidInputError, InvalidInputTypeError
from .features import FeatureFn, check_feature_output, feature_forward

Batch = Tuple[Tensor, Tensor]


def total_dataset(data: object) -> Optional[int]:
    """Number of items in ``data``'s dataset (or tensor), when known.

    Args:
        data: An image tensor, a ``DataLoader`` or any iterable.

    Returns:
        *int* or ``None``: the tensor's rows or the map-style dataset's length.
    """
    if isinstance(data, Tensor):
        return int(data.shape[0])
    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        try:
            return len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    return None


def embed_dataset(
    model: nn.Module,
    data: Union[DataLoader, Tensor, Iterable[Any]],
    labels: Optional[Tensor] = None,
    feature_fn: Optional[FeatureFn] = None,
    batch_size: int = 64,
    device: Optional[Union[str, torch.device]] = None,
    bank_device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> Tuple[Tensor, Tensor]:
    """The L2-normalised features (M, D) and labels (M,) of a labelled dataset.

    The arguments are those of :meth:`captum_daam.MemoryBank.build`, which documents
    them and the distributed build.

    Returns:
        ``(features, labels)`` on ``bank_device``, features in ``dtype``.

    Example::

        >>> features, labels = embed_dataset(model, loader, progress=False)
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidInputTypeError(f"dtype must be a floating dtype, got {dtype!r}")
    base = unwrap_model(model)
    if device is None:
        param = next(iter(base.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    bank_device = device if bank_device is None else torch.device(bank_device)
    if base.training:
        warnings.warn(
            "the model is in training mode: dropout makes the bank's features "
            "random; call model.eval() first",
            stacklevel=3,
        )
    forward = feature_forward(model, feature_fn)
    rank, world = rank_and_world()
    batches, total, indices = _shard(data, labels, batch_size, rank, world)

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="memory bank", unit="img")
    collector = _Collector(bank_device, dtype, total)
    try:
        with torch.no_grad():
            for images, batch_labels in batches:
                images = images.to(device, non_blocking=True)
                embedded = check_feature_output(forward(images))
                if embedded.shape[0] != images.shape[0]:
                    raise InvalidInputError(
                        f"feature_fn returned {embedded.shape[0]} feature rows for "
                        f"{images.shape[0]} images"
                    )
                collector.add(l2_normalise(embedded), batch_labels)
                if bar is not None:
                    bar.update(images.shape[0])
    finally:
        if bar is not None:
            bar.close()
    features, all_labels = collector.result()
    if world > 1:
        features, all_labels = _gather(features, all_labels, indices, bank_device, dtype)
        expected = total_dataset(data)
        if indices is not None and expected is not None and features.shape[0] != expected:
            warnings.warn(
                f"the distributed build embedded {features.shape[0]} of the "
                f"{expected} images in the dataset (drop_last?)",
                stacklevel=3,
            )
    if features is None or features.shape[0] == 0:
        raise InvalidInputError("the memory bank is empty: the data yielded no images")
    return features, all_labels


class _Collector:
    """Accumulates normalised features and labels on the bank's device.

    With the number of images known in advance the features go straight into one
    preallocated (M, D) tensor, so the bank never exists twice in memory.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, total: Optional[int]) -> None:
        self.device, self.dtype, self.total = device, dtype, total
        self.buffer: Optional[Tensor] = None
        self.filled = 0
        self.features: List[Tensor] = []
        self.labels: List[Tensor] = []

    def add(self, features: Tensor, labels: Tensor) -> None:
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != features.shape[0]:
            raise InvalidInputError(
                f"a batch of {features.shape[0]} images came with labels of shape "
                f"{tuple(labels.shape)}; the data must yield (images, labels) with one "
                "integer label per image"
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise InvalidInputTypeError(f"labels must be integer class indices, got {labels.dtype}")
        self.labels.append(labels.to(self.device, torch.long))
        rows = features.shape[0]
        if self.buffer is None and self.total is not None and not self.features:
            self.buffer = torch.empty(
                self.total, features.shape[1], dtype=self.dtype, device=self.device
            )
        if self.buffer is not None and self.filled + rows <= self.buffer.shape[0]:
            self.buffer[self.filled : self.filled + rows] = features
        else:  # more images than announced: fall back to a list
            if self.buffer is not None:
                self.features.append(self.buffer[: self.filled])
                self.buffer = None
            self.features.append(features.to(self.device, self.dtype))
        self.filled += rows

    def result(self) -> Tuple[Optional[Tensor], Tensor]:
        labels = (
            torch.cat(self.labels)
            if self.labels
            else torch.empty(0, dtype=torch.long, device=self.device)
        )
        if self.buffer is not None:
            return self.buffer[: self.filled], labels
        if not self.features:
            return None, labels
        features = torch.cat(self.features)
        self.features.clear()
        return features, labels


def _split_batch(batch: object) -> Batch:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor):
        return batch[0], torch.as_tensor(batch[1])
    raise InvalidInputTypeError(
        "each batch must be (images, labels, ...) with images a tensor (N, C, H, W); got "
        f"{type(batch).__name__}. Wrap the dataset so that it yields (image, label)"
    )


def _shard(
    data: Union[DataLoader, Tensor, Iterable[Any]],
    labels: Optional[Tensor],
    batch_size: int,
    rank: int,
    world: int,
) -> Tuple[Iterator[Batch], Optional[int], Optional[Tensor]]:
    """This rank's batches, their number of images (if known) and their dataset indices
    (distributed only)."""
    distributed = world > 1
    if isinstance(data, Tensor):
        if labels is None:
            raise InvalidInputError(
                "MemoryBank.build from an image tensor needs labels=, one class per image"
            )
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != data.shape[0]:
            raise InvalidInputError(
                f"{data.shape[0]} images but labels of shape {tuple(labels.shape)}"
            )
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be positive, got {batch_size}")
        lo, hi = shard_bounds(data.shape[0], rank, world)

        def tensor_batches() -> Iterator[Batch]:
            for start in range(lo, hi, batch_size):
                stop = min(start + batch_size, hi)
                yield data[start:stop], labels[start:stop]

        indices = torch.arange(lo, hi) if distributed else None
        return tensor_batches(), hi - lo, indices
    if labels is not None:
        raise InvalidInputError("labels= is only for image tensors; a loader yields its labels")
    if not distributed:
        total = None
        if isinstance(data, DataLoader) and not data.drop_last:
            try:
                total = len(data.sampler)  # type: ignore[arg-type]
            except TypeError:
                total = None
        return (_split_batch(b) for b in data), total, None
    if not isinstance(data, DataLoader):
        raise InvalidInputError(
            "a distributed MemoryBank.build needs a DataLoader over a map-style dataset "
            "(or image tensors), so that each rank can embed its own shard"
        )
    if isinstance(data.sampler, DistributedSampler):
        indices = torch.tensor(list(iter(data.sampler)), dtype=torch.long)
        return (_split_batch(b) for b in data), len(indices), indices
    shard, indices = shard_loader(data, rank, world, purpose="a distributed MemoryBank.build")
    return (_split_batch(b) for b in shard), len(indices), indices


def _gather(
    features: Optional[Tensor],
    labels: Tensor,
    indices: Optional[Tensor],
    bank_device: torch.device,
    dtype: torch.dtype,
) -> Tuple[Tensor, Tensor]:
    """All ranks' features and labels on every rank, in dataset order (the
    ``DistributedSampler``'s padding duplicates dropped)."""
    n_local = labels.shape[0]
    if features is None:
        features = torch.empty(0, 0, dtype=dtype)
    local_indices = torch.full((n_local,), -1, dtype=torch.long)
    if indices is not None:
        local_indices = indices[:n_local]
    meta = torch.stack([labels.cpu(), local_indices.cpu()], dim=1)
    all_features = all_gather_rows(features, bank_device)
    all_meta = all_gather_rows(meta, bank_device)
    order = dataset_order(all_meta[:, 1])
    if order is not None:
        all_features, all_meta = all_features[order], all_meta[order]
    return all_features, all_meta[:, 0]


__all__ = ["embed_dataset", "total_dataset"]
