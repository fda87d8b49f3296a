"""A memory bank of labelled, L2-normalised class-token features for k-NN search.

Self-supervised DAAM (:class:`~captum_daam.SelfSupervisedDAAM`) has no class score to
explain; it takes its channel importance from the nearest neighbours of an image in a
bank of labelled features. :class:`MemoryBank` holds that bank: it is built by running a
backbone over a labelled dataset (in batches, on CPU or GPU, on one process or on every
rank of a ``torch.distributed`` process group), saved to and loaded from a safetensors
file, and searched with a chunked top-k that never forms the full query x bank
similarity matrix, so an ImageNet-sized bank (1.28 M x 384 floats, about 2 GB) fits in
memory on CPU or GPU.
"""

from __future__ import annotations

import os
import warnings
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler, Subset
from torch.utils.data.distributed import DistributedSampler

from .adapters import get_adapter, unwrap_model

#: ``feature_fn(model, *inputs) -> (N, D)``: the embedding of a batch. ``model`` is the
#: module that runs (the model itself, or its replica on one device under
#: ``DataParallel``); ``inputs`` are the images followed by any extra forward arguments.
FeatureFn = Callable[..., Tensor]

PathLike = Union[str, "os.PathLike[str]"]

#: Written into every bank file, checked on load.
_FORMAT_KEY = "captum_daam"
_FORMAT_VALUE = "memory_bank/1"

#: Default bank rows and queries per step of the chunked search: at most
#: 256 x 65536 similarities (64 MiB in float32) exist at any time.
DEFAULT_CHUNK_SIZE = 65536
DEFAULT_QUERY_CHUNK = 256

#: Rows per all_gather step when a distributed build gathers the bank.
_GATHER_ROWS = 65536


class _FeatureForward(nn.Module):
    """``feature_fn(model, *inputs)`` as a module, so ``DataParallel`` can replicate it."""

    def __init__(self, model: nn.Module, feature_fn: FeatureFn) -> None:
        super().__init__()
        self.model = model
        self.feature_fn = feature_fn

    def forward(self, *inputs: Any) -> Tensor:
        return self.feature_fn(self.model, *inputs)


def feature_forward(model: nn.Module, feature_fn: Optional[FeatureFn] = None) -> nn.Module:
    """A module whose forward returns the model's features (N, D).

    ``feature_fn=None`` uses the model family's adapter (for timm ViTs: the pooled
    pre-logits class-token embedding). A ``DataParallel`` model gives a ``DataParallel``
    module with the same devices, so the features are computed on every replica.
    """
    base = unwrap_model(model)
    if feature_fn is None:
        feature_fn = get_adapter(base).features
    elif not callable(feature_fn):
        raise TypeError(
            f"feature_fn must be callable as feature_fn(model, images, ...) -> (N, D), "
            f"got {type(feature_fn).__name__}"
        )
    module = _FeatureForward(base, feature_fn)
    if isinstance(model, nn.DataParallel) and model.device_ids:  # no devices: no-op
        return nn.DataParallel(
            module, device_ids=model.device_ids, output_device=model.output_device,
            dim=model.dim,
        )
    return module


def check_feature_output(features: object, context: str = "feature_fn") -> Tensor:
    """The output of a feature function, checked to be a finite (N, D) float tensor."""
    if not isinstance(features, Tensor):
        raise TypeError(
            f"{context} must return a tensor of features (N, D), got "
            f"{type(features).__name__}"
        )
    if features.dim() != 2:
        raise ValueError(
            f"{context} must return one feature vector per image, shape (N, D); got "
            f"{tuple(features.shape)}. For timm ViTs the default is "
            "model.forward_head(model.forward_features(x), pre_logits=True)"
        )
    if not features.is_floating_point():
        raise TypeError(f"{context} returned {features.dtype} features; expected floats")
    return features


def _normalise(features: Tensor) -> Tensor:
    dtype = torch.promote_types(features.dtype, torch.float32)
    return F.normalize(features.to(dtype), p=2, dim=-1, eps=1e-12)


def _compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """Similarities are computed in the widest of the dtypes involved, at least float32."""
    result = torch.float32
    for dtype in dtypes:
        result = torch.promote_types(result, dtype)
    return result


class MemoryBank:
    r"""L2-normalised class-token features of a labelled dataset, with their labels.

    The bank is what self-supervised DAAM searches for the neighbours of an image: the
    features must come from the same backbone and the same feature function as the
    explained model (:meth:`build` ensures that). It may live on another device than the
    model (e.g. on the CPU while the model is on a GPU); searches run where the bank is.

    Args:
        features: Bank features, (M, D), floating point. Rows are L2-normalised here
            unless ``normalize=False`` (for rows already normalised).
        labels: Integer class labels, (M,).
        normalize: L2-normalise the rows (default ``True``).
        metadata: Optional string key/value pairs saved with the bank (e.g. the model
            name), for the user's own bookkeeping.

    Examples::

        >>> import timm, torch
        >>> from captum_daam import MemoryBank
        >>> model = timm.create_model("vit_small_patch16_224", num_classes=0).eval()
        >>> bank = MemoryBank.build(model, loader)          # (images, labels) batches
        >>> bank.save("bank.safetensors")
        >>> bank = MemoryBank.load("bank.safetensors", device="cuda")
        >>> similarities, indices = bank.search(features, k=20)
    """

    def __init__(
        self,
        features: Tensor,
        labels: Tensor,
        normalize: bool = True,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> None:
        if not isinstance(features, Tensor) or not isinstance(labels, Tensor):
            raise TypeError(
                "a MemoryBank holds tensors: features (M, D) and labels (M,); got "
                f"{type(features).__name__} and {type(labels).__name__}"
            )
        if features.dim() != 2:
            raise ValueError(
                f"bank features must be (M, D), one row per image; got shape "
                f"{tuple(features.shape)}"
            )
        if not features.is_floating_point():
            raise TypeError(
                f"bank features have dtype {features.dtype}; expected floating point"
            )
        if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"bank labels must be integer class indices of shape (M,); got "
                f"{labels.dtype} of shape {tuple(labels.shape)}"
            )
        if features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"the bank has {features.shape[0]} feature rows but {labels.shape[0]} "
                "labels; they must match one to one"
            )
        if features.shape[0] == 0:
            raise ValueError(
                "the memory bank is empty: it needs at least one labelled feature (was "
                "the dataset or loader empty?)"
            )
        if features.shape[1] == 0:
            raise ValueError("bank features have 0 dimensions")
        if not bool(torch.isfinite(features).all()):
            raise ValueError(
                "bank features contain NaN or infinite values; rebuild the bank (in "
                "float16, try bfloat16 or float32)"
            )
        if normalize:
            features = _normalise(features).to(features.dtype)
        self._features = features
        self._labels = labels.to(device=features.device, dtype=torch.long)
        self.metadata: Dict[str, str] = dict(metadata or {})
        self._classes: Optional[Tensor] = None

    # ------------------------------------------------------------------ properties
    @property
    def features(self) -> Tensor:
        """The L2-normalised features, (M, D)."""
        return self._features

    @property
    def labels(self) -> Tensor:
        """The class labels, (M,) long, on the bank's device."""
        return self._labels

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return int(self._features.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self._features.dtype

    @property
    def device(self) -> torch.device:
        return self._features.device

    @property
    def classes(self) -> Tensor:
        """The distinct labels in the bank, sorted, (C,)."""
        if self._classes is None:
            self._classes = torch.unique(self._labels)
        return self._classes

    def __len__(self) -> int:
        return int(self._features.shape[0])

    def __repr__(self) -> str:
        return (
            f"MemoryBank(size={len(self)}, dim={self.dim}, classes={len(self.classes)}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def to(
        self, device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "MemoryBank":
        """A copy of the bank on ``device`` and/or in ``dtype`` (floating point)."""
        features = self._features.to(device=device, dtype=dtype)
        return MemoryBank(features, self._labels.to(features.device), normalize=False,
                          metadata=self.metadata)

    # ------------------------------------------------------------------ validation
    def check_features(self, features: Tensor, context: str = "the query features") -> None:
        """Raise a clear error unless ``features`` are (N, D) floats matching the bank."""
        check_feature_output(features, context)
        if features.shape[1] != self.dim:
            raise ValueError(
                f"{context} have {features.shape[1]} dimensions but the memory bank holds "
                f"{self.dim}-dimensional features; build the bank with the same backbone "
                "and feature function as the model you explain"
            )

    def check_classes(self, classes: Tensor) -> None:
        """Raise a clear error if any of ``classes`` has no entry in the bank."""
        present = torch.isin(classes.to(self.device), self.classes)
        if not bool(present.all()):
            missing = sorted(set(classes[~present.to(classes.device)].tolist()))
            shown = ", ".join(str(c) for c in self.classes[:20].tolist())
            more = ", ..." if len(self.classes) > 20 else ""
            raise ValueError(
                f"target class {missing} has no entry in the memory bank, so there are no "
                f"neighbours of that class to take importance weights from; the bank "
                f"holds {len(self.classes)} classes ({shown}{more})"
            )

    def _check_k(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if k > len(self):
            raise ValueError(
                f"k={k} nearest neighbours were asked for, but the memory bank holds only "
                f"{len(self)} entries; use k <= {len(self)} or a larger bank"
            )

    # ------------------------------------------------------------------ search
    @torch.no_grad()
    def search(
        self,
        queries: Tensor,
        k: int,
        labels: Optional[Tensor] = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        query_chunk: int = DEFAULT_QUERY_CHUNK,
    ) -> Tuple[Tensor, Tensor]:
        """The ``k`` most cosine-similar bank entries of every query.

        The search runs on the bank's device, ``chunk_size`` bank rows and
        ``query_chunk`` queries at a time, keeping a running top-k, so memory is
        ``O(query_chunk * chunk_size)`` however large the bank. Ties are broken as
        ``torch.topk`` breaks them.

        Args:
            queries: Query features (N, D), normalised here (any scale).
            k: Neighbours per query, ``1 <= k <= len(bank)``.
            labels: Optional class per query, (N,): restricts each query's search to the
                bank entries of that class. Where the class holds fewer than ``k``
                entries, the missing neighbours have similarity ``-inf`` and index -1.
            chunk_size: Bank rows per step.
            query_chunk: Queries per step.

        Returns:
            ``(similarities, indices)``, each (N, k), sorted by decreasing cosine
            similarity, on the queries' device; similarities in the computation dtype
            (the wider of the query's and the bank's, at least float32).
        """
        self.check_features(queries)
        self._check_k(k)
        if chunk_size < 1 or query_chunk < 1:
            raise ValueError("chunk_size and query_chunk must be positive")
        out_device = queries.device
        dtype = _compute_dtype(queries.dtype, self.dtype)
        q_all = _normalise(queries.detach().to(self.device, dtype))
        if labels is not None:
            labels = labels.to(self.device, torch.long).reshape(-1)
            if labels.shape[0] != q_all.shape[0]:
                raise ValueError(
                    f"labels must give one class per query ({q_all.shape[0]}), got "
                    f"{labels.shape[0]}"
                )
        sims_out, idx_out = [], []
        for q_start in range(0, q_all.shape[0], query_chunk):
            q = q_all[q_start : q_start + query_chunk]
            want = None if labels is None else labels[q_start : q_start + query_chunk]
            best_s = torch.empty(q.shape[0], 0, dtype=dtype, device=self.device)
            best_i = torch.empty(q.shape[0], 0, dtype=torch.long, device=self.device)
            for start in range(0, len(self), chunk_size):
                chunk = self._features[start : start + chunk_size].to(dtype)
                sims = (chunk @ q.T).T  # (queries, rows); faster on CPU than q @ chunk.T
                if want is not None:
                    other = self._labels[start : start + chunk_size][None, :] != want[:, None]
                    sims.masked_fill_(other, float("-inf"))
                s, i = sims.topk(min(k, sims.shape[1]), dim=1)
                s = torch.cat([best_s, s], dim=1)
                i = torch.cat([best_i, i + start], dim=1)
                best_s, pos = s.topk(min(k, s.shape[1]), dim=1)
                best_i = i.gather(1, pos)
            if want is not None:
                best_i = best_i.masked_fill(torch.isneginf(best_s), -1)
            sims_out.append(best_s)
            idx_out.append(best_i)
        return torch.cat(sims_out).to(out_device), torch.cat(idx_out).to(out_device)

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> None:
        """Write the bank to a safetensors file (features, labels and metadata)."""
        from safetensors.torch import save_file

        metadata = {**self.metadata, _FORMAT_KEY: _FORMAT_VALUE}
        save_file(
            {"features": self._features.detach().contiguous().cpu(),
             "labels": self._labels.contiguous().cpu()},
            os.fspath(path), metadata=metadata,
        )

    @classmethod
    def load(
        cls, path: PathLike, device: Union[str, torch.device] = "cpu",
        dtype: Optional[torch.dtype] = None,
    ) -> "MemoryBank":
        """Read a bank written by :meth:`save`, onto ``device`` (optionally cast)."""
        from safetensors import safe_open

        path = os.fspath(path)
        tensors: Dict[str, Tensor] = {}
        with safe_open(path, framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            keys = set(handle.keys())
            if metadata.get(_FORMAT_KEY) != _FORMAT_VALUE or keys != {"features", "labels"}:
                raise ValueError(
                    f"{path} is not a captum_daam memory bank (expected tensors 'features' "
                    f"and 'labels' and metadata {_FORMAT_KEY}={_FORMAT_VALUE!r}; found "
                    f"tensors {sorted(keys)}, metadata {_FORMAT_KEY}="
                    f"{metadata.get(_FORMAT_KEY)!r})"
                )
            for key in keys:
                tensors[key] = handle.get_tensor(key)
        metadata.pop(_FORMAT_KEY)
        features = tensors["features"].to(device=device, dtype=dtype)
        return cls(features, tensors["labels"], normalize=False, metadata=metadata)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        model: nn.Module,
        data: Union[DataLoader, Tensor, Iterable[Any]],
        labels: Optional[Tensor] = None,
        feature_fn: Optional[FeatureFn] = None,
        batch_size: int = 64,
        device: Optional[Union[str, torch.device]] = None,
        bank_device: Optional[Union[str, torch.device]] = None,
        dtype: torch.dtype = torch.float32,
        progress: bool = True,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> "MemoryBank":
        """Embed a labelled dataset with the backbone and return the bank.

        Runs under ``torch.no_grad()`` in batches. When a ``torch.distributed`` process
        group is initialised (e.g. under ``torchrun``; gloo on CPU, NCCL on GPU) every
        rank embeds its own shard and the shards are gathered, so every rank returns the
        whole bank, in dataset order:

        * a ``DataLoader`` without a ``DistributedSampler`` (``shuffle=False``) is split
          into contiguous shards of its dataset, one per rank, loaded with the same
          settings;
        * a ``DataLoader`` with a ``DistributedSampler`` is used as it is (each rank
          embeds what its sampler gives); the sampler's padding duplicates are dropped;
        * image tensors are split into contiguous shards.

        Args:
            model: The backbone (a timm ViT, possibly with a head: the head is not used;
                possibly in ``DataParallel``). Call ``model.eval()`` first.
            data: A ``DataLoader`` (or any iterable, single-process only) yielding
                ``(images, labels, ...)`` batches, or an image tensor (M, C, H, W) with
                ``labels``.
            labels: Class labels (M,) when ``data`` is an image tensor.
            feature_fn: ``feature_fn(model, images) -> (N, D)``; default: the adapter's
                class-token embedding (timm: ``forward_head(forward_features(x),
                pre_logits=True)``). Use the same one for :class:`SelfSupervisedDAAM`.
            batch_size: Images per forward when ``data`` is a tensor.
            device: Where the model runs; default: the device of its parameters.
            bank_device: Where the bank is kept; default: ``device``.
            dtype: Floating dtype of the stored features (default float32).
            progress: Show a progress bar (rank 0 only).
            metadata: String key/value pairs saved with the bank.

        Returns:
            *MemoryBank*: the bank, on ``bank_device``.
        """
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype!r}")
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
                stacklevel=2,
            )
        forward = feature_forward(model, feature_fn)
        distributed = (
            torch.distributed.is_available() and torch.distributed.is_initialized()
        )
        rank = torch.distributed.get_rank() if distributed else 0
        world = torch.distributed.get_world_size() if distributed else 1
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
                    features = check_feature_output(forward(images))
                    if features.shape[0] != images.shape[0]:
                        raise ValueError(
                            f"feature_fn returned {features.shape[0]} feature rows for "
                            f"{images.shape[0]} images"
                        )
                    collector.add(_normalise(features), batch_labels)
                    if bar is not None:
                        bar.update(images.shape[0])
        finally:
            if bar is not None:
                bar.close()
        local_features, local_labels = collector.result()
        if distributed:
            local_indices = None
            if indices is not None:
                local_indices = indices[: local_labels.shape[0]]
            features, all_labels = _gather(
                local_features, local_labels, local_indices, bank_device, dtype, world
            )
            if indices is not None and total_dataset(data) is not None:
                expected = total_dataset(data)
                if features.shape[0] != expected:
                    warnings.warn(
                        f"the distributed build embedded {features.shape[0]} of the "
                        f"{expected} images in the dataset (drop_last?)",
                        stacklevel=2,
                    )
        else:
            features, all_labels = local_features, local_labels
        if features is None or features.shape[0] == 0:
            raise ValueError(
                "the memory bank is empty: the data yielded no images"
            )
        info = {"model_class": type(base).__name__}
        config = getattr(base, "pretrained_cfg", None)  # timm models carry their name
        if isinstance(config, dict) and config.get("architecture"):
            info["model"] = str(config["architecture"])
        info.update(metadata or {})
        return cls(features, all_labels, normalize=False, metadata=info)


def total_dataset(data: object) -> Optional[int]:
    """Number of items in ``data``'s dataset (or tensor), when known."""
    if isinstance(data, Tensor):
        return int(data.shape[0])
    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        try:
            return len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    return None


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
            raise ValueError(
                f"a batch of {features.shape[0]} images came with labels of shape "
                f"{tuple(labels.shape)}; the data must yield (images, labels) with one "
                "integer label per image"
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
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
        labels = torch.cat(self.labels) if self.labels else torch.empty(
            0, dtype=torch.long, device=self.device
        )
        if self.buffer is not None:
            return self.buffer[: self.filled], labels
        if not self.features:
            return None, labels
        features = torch.cat(self.features)
        self.features.clear()
        return features, labels


Batch = Tuple[Tensor, Tensor]


def _split_batch(batch: object) -> Batch:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor):
        return batch[0], torch.as_tensor(batch[1])
    raise TypeError(
        "each batch must be (images, labels, ...) with images a tensor (N, C, H, W); got "
        f"{type(batch).__name__}. Wrap the dataset so that it yields (image, label)"
    )


def _shard(
    data: object, labels: Optional[Tensor], batch_size: int, rank: int, world: int
) -> Tuple[Iterator[Batch], Optional[int], Optional[Tensor]]:
    """This rank's batches, their number of images (if known) and their dataset indices
    (distributed only)."""
    distributed = world > 1
    if isinstance(data, Tensor):
        if labels is None:
            raise ValueError(
                "MemoryBank.build from an image tensor needs labels=, one class per image"
            )
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != data.shape[0]:
            raise ValueError(
                f"{data.shape[0]} images but labels of shape {tuple(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = data.shape[0]
        lo, hi = rank * n // world, (rank + 1) * n // world

        def tensor_batches() -> Iterator[Batch]:
            for start in range(lo, hi, batch_size):
                stop = min(start + batch_size, hi)
                yield data[start:stop], labels[start:stop]

        indices = torch.arange(lo, hi) if distributed else None
        return tensor_batches(), hi - lo, indices
    if labels is not None:
        raise ValueError("labels= is only for image tensors; a loader yields its labels")
    if not distributed:
        total = None
        if isinstance(data, DataLoader) and not data.drop_last:
            try:
                total = len(data.sampler)  # type: ignore[arg-type]
            except TypeError:
                total = None
        return (_split_batch(b) for b in data), total, None  # type: ignore[union-attr]
    if not isinstance(data, DataLoader) or isinstance(data.dataset, IterableDataset):
        raise ValueError(
            "a distributed MemoryBank.build needs a DataLoader over a map-style dataset "
            "(or image tensors), so that each rank can embed its own shard"
        )
    if isinstance(data.sampler, DistributedSampler):
        indices = torch.tensor(list(iter(data.sampler)), dtype=torch.long)
        return (_split_batch(b) for b in data), len(indices), indices
    if not isinstance(data.sampler, SequentialSampler) or data.batch_size is None:
        raise ValueError(
            "a distributed MemoryBank.build shards a DataLoader with shuffle=False and a "
            "batch_size, or uses the loader as it is when its sampler is a "
            "DistributedSampler; this loader has neither"
        )
    if data.drop_last:
        raise ValueError(
            "drop_last=True would leave images out of the memory bank; build it with "
            "drop_last=False"
        )
    n = len(data.dataset)  # type: ignore[arg-type]
    lo, hi = rank * n // world, (rank + 1) * n // world
    shard = DataLoader(
        Subset(data.dataset, range(lo, hi)),
        batch_size=data.batch_size,
        shuffle=False,
        num_workers=data.num_workers,
        collate_fn=data.collate_fn,
        pin_memory=data.pin_memory,
        timeout=data.timeout,
        worker_init_fn=data.worker_init_fn,
        multiprocessing_context=data.multiprocessing_context,
        prefetch_factor=data.prefetch_factor,
        persistent_workers=data.persistent_workers,
    )
    return (_split_batch(b) for b in shard), hi - lo, torch.arange(lo, hi)


def _gather(
    features: Optional[Tensor],
    labels: Tensor,
    indices: Optional[Tensor],
    bank_device: torch.device,
    dtype: torch.dtype,
    world: int,
) -> Tuple[Tensor, Tensor]:
    """All ranks' features and labels on every rank, in dataset order.

    Shards are padded to the longest and gathered ``_GATHER_ROWS`` rows at a time with
    ``all_gather`` (on the GPU under NCCL, on the CPU otherwise), so the communication
    buffers stay small however large the bank.
    """
    dist = torch.distributed
    comm = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl" else torch.device("cpu")
    )
    n_local = labels.shape[0]
    dim = features.shape[1] if features is not None else 0
    header = torch.tensor([n_local, dim], dtype=torch.long, device=comm)
    headers = [torch.zeros_like(header) for _ in range(world)]
    dist.all_gather(headers, header)
    sizes = [int(h[0]) for h in headers]
    dims = {int(h[1]) for h, s in zip(headers, sizes) if s > 0}
    if len(dims) > 1:
        raise RuntimeError(f"ranks produced features of different dimensions {sorted(dims)}")
    dim = dims.pop() if dims else 0
    total, longest = sum(sizes), max(sizes)
    out_features = torch.empty(total, dim, dtype=dtype, device=bank_device)
    out_meta = torch.empty(total, 2, dtype=torch.long, device=bank_device)
    offsets = [sum(sizes[:r]) for r in range(world)]
    if indices is None:
        indices = torch.full((n_local,), -1, dtype=torch.long)
    meta = torch.stack([labels.cpu(), indices.cpu()], dim=1)
    for start in range(0, longest, _GATHER_ROWS):
        rows = min(_GATHER_ROWS, longest - start)
        piece = torch.zeros(rows, dim, dtype=dtype, device=comm)
        piece_meta = torch.zeros(rows, 2, dtype=torch.long, device=comm)
        mine = max(0, min(rows, n_local - start))
        if mine:
            piece[:mine] = features[start : start + mine].to(comm)  # type: ignore[index]
            piece_meta[:mine] = meta[start : start + mine].to(comm)
        pieces = [torch.empty_like(piece) for _ in range(world)]
        metas = [torch.empty_like(piece_meta) for _ in range(world)]
        dist.all_gather(pieces, piece)
        dist.all_gather(metas, piece_meta)
        for r in range(world):
            valid = max(0, min(rows, sizes[r] - start))
            if valid:
                at = offsets[r] + start
                out_features[at : at + valid] = pieces[r][:valid].to(bank_device)
                out_meta[at : at + valid] = metas[r][:valid].to(bank_device)
    order_key = out_meta[:, 1]
    in_order = bool((order_key[1:] > order_key[:-1]).all())  # contiguous shards: no copy
    if not in_order and bool((order_key >= 0).all()):
        order = torch.argsort(order_key, stable=True)
        sorted_key = order_key[order]
        keep = torch.ones_like(sorted_key, dtype=torch.bool)
        keep[1:] = sorted_key[1:] != sorted_key[:-1]  # DistributedSampler padding
        order = order[keep]
        out_features, out_meta = out_features[order], out_meta[order]
    return out_features, out_meta[:, 0]


__all__ = ["FeatureFn", "MemoryBank", "feature_forward"]
