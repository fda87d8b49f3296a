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
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ._core.knn import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_QUERY_CHUNK,
    l2_normalise,
    top_k_cosine,
)
from .adapters import model_name, unwrap_model
from .errors import InvalidInputError, InvalidInputTypeError
from .features import FeatureFn, check_feature_output, feature_forward
from .memory_bank_build import embed_dataset, total_dataset
from .memory_bank_file import check_bank_tensors, read_bank_file, write_bank_file

PathLike = Union[str, "os.PathLike[str]"]


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
        check_bank_tensors(features, labels)
        if normalize:
            features = l2_normalise(features).to(features.dtype)
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
        self,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "MemoryBank":
        """A copy of the bank on ``device`` and/or in ``dtype`` (floating point)."""
        features = self._features.to(device=device, dtype=dtype)
        return MemoryBank(
            features, self._labels.to(features.device), normalize=False, metadata=self.metadata
        )

    # ------------------------------------------------------------------ validation
    def check_features(self, features: Tensor, context: str = "the query features") -> None:
        """Raise a clear error unless ``features`` are (N, D) floats matching the bank."""
        check_feature_output(features, context)
        if features.shape[1] != self.dim:
            raise InvalidInputError(
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
            raise InvalidInputError(
                f"target class {missing} has no entry in the memory bank, so there are no "
                f"neighbours of that class to take importance weights from; the bank "
                f"holds {len(self.classes)} classes ({shown}{more})"
            )

    def check_k(self, k: int) -> None:
        """Raise a clear error unless ``k`` is a number of neighbours the bank can give
        (a positive int, at most ``len(bank)``)."""
        if isinstance(k, bool) or not isinstance(k, int):
            raise InvalidInputTypeError(f"k must be a positive int, got {k!r}")
        if k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        if k > len(self):
            raise InvalidInputError(
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
        self.check_k(k)
        similarities, indices = top_k_cosine(
            self._features,
            queries,
            k,
            row_labels=self._labels,
            query_labels=labels,
            chunk_size=chunk_size,
            query_chunk=query_chunk,
        )
        return similarities.to(queries.device), indices.to(queries.device)

    # ------------------------------------------------------------------ files
    def save(self, path: PathLike) -> None:
        """Write the bank to a safetensors file (features, labels and metadata).

        Args:
            path: The file to write (conventionally ``*.safetensors``); its folder must
                exist and be writable.

        Raises:
            InvalidFileError: ``path`` is a folder, or cannot be written.

        Example::

            >>> bank.save("bank.safetensors")
        """
        write_bank_file(os.fspath(path), self._features, self._labels, self.metadata)

    @classmethod
    def load(
        cls,
        path: PathLike,
        device: Union[str, torch.device] = "cpu",
        dtype: Optional[torch.dtype] = None,
    ) -> "MemoryBank":
        """Read a bank written by :meth:`save`, onto ``device`` (optionally cast).

        Args:
            path: The bank file.
            device: Where the bank is kept (default CPU).
            dtype: Floating dtype to cast the features to; ``None`` keeps the file's.

        Returns:
            *MemoryBank*: the bank, searched where it lives.

        Raises:
            InvalidFileError: ``path`` is missing, a folder, truncated, corrupt, of
                another format or holds tensors of the wrong shapes or dtypes; the
                message names the path, the problem and the fix. Never a third-party
                exception.

        Example::

            >>> bank = MemoryBank.load("bank.safetensors", device="cuda")
        """
        if dtype is not None and (
            not isinstance(dtype, torch.dtype) or not dtype.is_floating_point
        ):
            raise InvalidInputTypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        tensors, metadata = read_bank_file(os.fspath(path))
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
        features, all_labels = embed_dataset(
            model,
            data,
            labels,
            feature_fn,
            batch_size,
            device,
            bank_device,
            dtype,
            progress,
        )
        info = {"model_class": type(unwrap_model(model)).__name__}
        name = model_name(model)
        if name:
            info["model"] = name
        info.update(metadata or {})
        return cls(features, all_labels, normalize=False, metadata=info)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_QUERY_CHUNK",
    "FeatureFn",
    "MemoryBank",
    "check_feature_output",
    "feature_forward",
    "total_dataset",
]
