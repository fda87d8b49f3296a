"""MemoryBank: chunked search, files, building (one process and two), validation; the
feature forward and the sharding helpers the build uses.

Run as a script under torchrun, this file is the worker of the two-process build test.
"""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from captum_daam import MemoryBank
from captum_daam._core.knn import l2_normalise, top_k_cosine
from captum_daam.distributed import (
    all_gather_rows,
    dataset_order,
    rank_and_world,
    shard_bounds,
    shard_loader,
)
from captum_daam.features import FeatureForward
from captum_daam.memory_bank import feature_forward
from families import build
from torchrun import run_two_processes

DIM = 48  # embedding width of the tiny families


def brute_force(bank_features, queries, k, labels=None, bank_labels=None):
    bank = F.normalize(bank_features.double(), dim=1)
    sims = F.normalize(queries.double(), dim=1) @ bank.T
    if labels is not None:
        sims = sims.masked_fill(bank_labels[None, :] != labels[:, None], float("-inf"))
    return sims.topk(k, dim=1)


@given(
    size=st.integers(1, 60),
    dim=st.integers(2, 8),  # dim 1: every row is +-1 after normalising, all ties
    queries=st.integers(1, 5),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_chunked_search_equals_brute_force(size, dim, queries, data, seed):
    k = data.draw(st.integers(1, size))
    chunk = data.draw(st.integers(1, size + 2))
    query_chunk = data.draw(st.integers(1, queries + 1))
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(size, dim, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 3, (size,), generator=g)
    q = torch.randn(queries, dim, generator=g, dtype=torch.float64)
    bank = MemoryBank(features, labels)

    sims, idx = bank.search(q, k, chunk_size=chunk, query_chunk=query_chunk)
    ref_sims, ref_idx = brute_force(features, q, k)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(sims, ref_sims)

    # Restricted to one class per query: the class's entries only, padded with -1/-inf.
    want = torch.randint(0, 3, (queries,), generator=g)
    sims, idx = bank.search(q, k, labels=want, chunk_size=chunk, query_chunk=query_chunk)
    ref_sims, ref_idx = brute_force(features, q, k, want, labels)
    missing = torch.isneginf(ref_sims)
    assert torch.equal(torch.isneginf(sims), missing)
    assert torch.equal(idx[~missing], ref_idx[~missing])
    assert bool((idx[missing] == -1).all())
    torch.testing.assert_close(sims[~missing], ref_sims[~missing])
    assert bool((labels[idx[~missing]] == want[:, None].expand_as(idx)[~missing]).all())


def test_search_normalises_queries_and_rows():
    features = torch.randn(20, 6, dtype=torch.float64) * 5
    bank = MemoryBank(features, torch.zeros(20, dtype=torch.long))
    torch.testing.assert_close(bank.features.norm(dim=1), torch.ones(20, dtype=torch.float64))
    sims, idx = bank.search(features[7:8] * 11, k=1)
    assert idx.tolist() == [[7]]
    torch.testing.assert_close(sims, torch.ones(1, 1, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_save_and_load_round_trip(tmp_path, dtype):
    features = torch.randn(9, 5).to(dtype)
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5])
    bank = MemoryBank(features, labels, metadata={"model": "dino_tiny"})
    path = tmp_path / "bank.safetensors"
    bank.save(path)
    loaded = MemoryBank.load(path)
    assert loaded.dtype == dtype and len(loaded) == 9 and loaded.dim == 5
    assert torch.equal(loaded.features, bank.features)
    assert torch.equal(loaded.labels, labels)
    assert loaded.metadata == {"model": "dino_tiny"}
    assert loaded.classes.tolist() == [1, 2, 3, 4, 5, 6, 9]
    as64 = MemoryBank.load(path, dtype=torch.float64)
    assert as64.dtype == torch.float64
    torch.testing.assert_close(as64.features, bank.features.double())


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ValueError, match="not a captum_daam memory bank"):
        MemoryBank.load(path)


def _bank_file(path, features, labels, fmt="memory_bank/1"):
    from safetensors.torch import save_file

    save_file({"features": features, "labels": labels}, str(path), metadata={"captum_daam": fmt})
    return path


def _bad_bank(tmp_path, kind):
    """A file (or path) that is not a usable bank, of one of many kinds."""
    import json
    import struct

    good = MemoryBank(torch.randn(6, 4), torch.arange(6))
    good.save(tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    path = tmp_path / f"{kind}.safetensors"
    header = json.dumps(
        {
            "__metadata__": {"captum_daam": "memory_bank/1"},
            "features": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]},
            "labels": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]},
        }
    )
    contents = {
        "truncated": data[: len(data) - 7],
        "truncated_header": data[:20],
        "garbage_header": struct.pack("<Q", 40) + b"\xff" * 40,
        "zero_bytes": b"",
        "huge_header": struct.pack("<Q", 2**60) + b"{}",
        "huge_shape": struct.pack("<Q", len(header)) + header.encode() + b"\0" * 24,
        "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    }
    if kind in contents:
        path.write_bytes(contents[kind])
    elif kind == "pickle":
        torch.save({"features": torch.randn(3, 2), "labels": torch.arange(3)}, path)
    elif kind == "features_1d":
        _bank_file(path, torch.randn(6), torch.arange(6))
    elif kind == "labels_float":
        _bank_file(path, torch.randn(6, 4), torch.rand(6))
    elif kind == "labels_2d":
        _bank_file(path, torch.randn(6, 4), torch.zeros(6, 1, dtype=torch.long))
    elif kind == "lengths_differ":
        _bank_file(path, torch.randn(6, 4), torch.arange(5))
    elif kind == "nan":
        _bank_file(path, torch.full((6, 4), float("nan")), torch.arange(6))
    elif kind == "int_features":
        _bank_file(path, torch.ones(6, 4, dtype=torch.int32), torch.arange(6))
    elif kind == "empty":
        _bank_file(path, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink_loop":
        path.symlink_to(path)
    elif kind != "missing":
        raise AssertionError(kind)
    return path


BAD_BANKS = [
    "truncated",
    "truncated_header",
    "garbage_header",
    "zero_bytes",
    "huge_header",
    "huge_shape",
    "png",
    "pickle",
    "features_1d",
    "labels_float",
    "labels_2d",
    "lengths_differ",
    "nan",
    "int_features",
    "empty",
    "directory",
    "symlink_loop",
    "missing",
]


@pytest.mark.parametrize("kind", BAD_BANKS)
def test_load_of_a_bad_file_is_one_clear_error(tmp_path, kind):
    from captum_daam.errors import InvalidFileError

    path = _bad_bank(tmp_path, kind)
    with pytest.raises(InvalidFileError) as caught:
        MemoryBank.load(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    assert "MemoryBank.build" in message or "MemoryBank.save" in message
    if kind not in ("directory", "symlink_loop", "missing"):
        assert "not a captum_daam memory bank" in message
    assert isinstance(caught.value, ValueError)


def test_save_to_an_unwritable_path_is_a_clear_error(tmp_path):
    from captum_daam.errors import InvalidFileError

    bank = MemoryBank(torch.randn(3, 2), torch.arange(3))
    (tmp_path / "file.txt").write_text("x")
    for path in (
        tmp_path,
        tmp_path / "no" / "bank.safetensors",
        tmp_path / "file.txt" / "bank.safetensors",
    ):
        with pytest.raises(InvalidFileError, match="cannot write the memory bank to"):
            bank.save(path)
    with pytest.raises(TypeError, match="floating torch.dtype"):
        MemoryBank.load(tmp_path / "any.safetensors", dtype=torch.int64)


def test_bank_errors_are_the_librarys():
    from captum_daam.errors import InvalidInputError, InvalidInputTypeError

    bank = MemoryBank(torch.randn(5, 4), torch.arange(5))
    with pytest.raises(InvalidInputTypeError):
        bank.check_k(2.0)
    with pytest.raises(InvalidInputError, match="positive int"):
        bank.check_k(0)
    with pytest.raises(InvalidInputTypeError):
        MemoryBank([[1.0]], torch.arange(1))
    with pytest.raises(InvalidInputError, match="integer class indices"):
        MemoryBank(torch.randn(2, 2), torch.rand(2))
    with pytest.raises(InvalidInputError, match="no entry in the memory bank"):
        bank.check_classes(torch.tensor([9]))


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64),
        torch.randint(0, 4, (n,), generator=g),
    )


def test_build_embeds_the_class_token_feature_in_batches():
    model = build("dino")
    images, labels = _images(7)
    from_tensors = MemoryBank.build(
        model, images, labels=labels, batch_size=3, dtype=torch.float64, progress=False
    )
    with torch.no_grad():
        expected = F.normalize(
            model.forward_head(model.forward_features(images), pre_logits=True), dim=1
        )
    torch.testing.assert_close(from_tensors.features, expected)
    assert torch.equal(from_tensors.labels, labels)
    assert from_tensors.metadata["model"] == "vit_small_patch16_224"
    loader = DataLoader(TensorDataset(images, labels), batch_size=2)
    from_loader = MemoryBank.build(model, loader, dtype=torch.float64, progress=True)
    torch.testing.assert_close(from_loader.features, from_tensors.features)
    assert torch.equal(from_loader.labels, labels)
    as32 = MemoryBank.build(model, loader, progress=False)
    assert as32.dtype == torch.float32
    # A sampler that visits part of the dataset: the bank holds what it visits.
    part = DataLoader(
        TensorDataset(images, labels),
        batch_size=2,
        sampler=torch.utils.data.SubsetRandomSampler([5, 1, 3]),
    )
    partial = MemoryBank.build(model, part, dtype=torch.float64, progress=False)
    assert len(partial) == 3 and sorted(partial.labels.tolist()) == sorted(
        labels[[5, 1, 3]].tolist()
    )


def test_bank_validation_errors():
    with pytest.raises(ValueError, match="empty"):
        MemoryBank(torch.empty(0, 4), torch.empty(0, dtype=torch.long))
    with pytest.raises(ValueError, match="5 feature rows but 4 labels"):
        MemoryBank(torch.randn(5, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        MemoryBank(torch.randn(5, 4), torch.zeros(5))
    with pytest.raises(TypeError, match="floating point"):
        MemoryBank(torch.ones(5, 4, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        MemoryBank(torch.full((5, 4), float("nan")), torch.zeros(5, dtype=torch.long))
    bank = MemoryBank(torch.randn(5, 4), torch.arange(5))
    with pytest.raises(ValueError, match="holds only 5 entries"):
        bank.search(torch.randn(1, 4), k=6)
    with pytest.raises(ValueError, match="3 dimensions but the memory bank holds 4"):
        bank.search(torch.randn(1, 3), k=2)
    with pytest.raises(ValueError, match=r"target class \[7, 8\]"):
        bank.check_classes(torch.tensor([1, 7, 8]))
    model = build("dino")
    images, labels = _images(3)
    with pytest.raises(ValueError, match="needs labels="):
        MemoryBank.build(model, images, progress=False)
    with pytest.raises(TypeError, match=r"\(images, labels, \.\.\.\)"):
        MemoryBank.build(model, DataLoader(images, batch_size=2), progress=False)
    with pytest.raises(ValueError, match="data yielded no images"):
        MemoryBank.build(model, DataLoader(TensorDataset(images[:0], labels[:0])), progress=False)


def test_core_search_restricted_by_class_needs_the_row_labels():
    rows = F.normalize(torch.randn(6, 4), dim=1)
    with pytest.raises(ValueError, match="pass row_labels"):
        top_k_cosine(rows, torch.randn(2, 4), 2, query_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one class per query"):
        top_k_cosine(
            rows,
            torch.randn(2, 4),
            2,
            row_labels=torch.zeros(6, dtype=torch.long),
            query_labels=torch.tensor([0]),
        )
    assert l2_normalise(torch.zeros(1, 3, dtype=torch.float16)).dtype == torch.float32


def test_feature_forward_has_the_models_mode():
    model = build("dino")
    forward = feature_forward(model)
    assert isinstance(forward, FeatureForward) and not forward.training
    model.train()
    assert forward.training
    forward.eval()  # reaches the model as for any child module
    assert not model.training and not forward.training
    with pytest.raises(TypeError, match="feature_fn must be callable"):
        feature_forward(model, feature_fn="cls")


# ----------------------------------------------------------------------------- distributed
def test_sharding_helpers_without_a_process_group():
    assert rank_and_world() == (0, 1)
    bounds = [shard_bounds(7, rank, 3) for rank in range(3)]
    assert bounds == [(0, 2), (2, 4), (4, 7)]
    rows = torch.randn(5, 2)
    assert torch.equal(all_gather_rows(rows), rows)  # one process: the rows themselves
    assert dataset_order(torch.tensor([0, 1, 2, 3])) is None  # contiguous: no copy
    assert dataset_order(torch.tensor([0, 2, 1, -1])) is None  # unknown index: as is
    # Two ranks of a DistributedSampler over 3 items: rank 0 {0, 2}, rank 1 {1, 0 (pad)}.
    assert dataset_order(torch.tensor([0, 2, 1, 0])).tolist() == [0, 2, 1]
    dataset = TensorDataset(torch.arange(7.0)[:, None], torch.arange(7))
    shard, indices = shard_loader(DataLoader(dataset, batch_size=2), 1, 2)
    assert indices.tolist() == [3, 4, 5, 6]
    assert torch.cat([labels for _, labels in shard]).tolist() == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="shuffle=False"):
        shard_loader(DataLoader(dataset, batch_size=2, shuffle=True), 0, 2)
    with pytest.raises(ValueError, match="drop_last=False"):
        shard_loader(DataLoader(dataset, batch_size=2, drop_last=True), 0, 2)


WORKER_IMAGES = 7  # odd: uneven shards, and DistributedSampler pads with a duplicate


def _single_process_bank():
    images, labels = _images(WORKER_IMAGES, seed=11)
    return MemoryBank.build(
        build("dino"), images, labels=labels, batch_size=2, dtype=torch.float64, progress=False
    )


def test_two_process_build_equals_single_process_build(tmp_path):
    run_two_processes(__file__, str(tmp_path))
    expected = _single_process_bank()
    for kind in ("sequential", "distributed_sampler", "shuffled_sampler", "tensors"):
        for rank in (0, 1):
            bank = MemoryBank.load(tmp_path / f"{kind}_rank{rank}.safetensors")
            assert len(bank) == WORKER_IMAGES, kind
            assert torch.equal(bank.labels, expected.labels), kind
            torch.testing.assert_close(
                bank.features, expected.features, rtol=1e-12, atol=1e-12, msg=kind
            )


def _worker(out: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    assert torch.distributed.get_world_size() == 2
    model = build("dino")
    images, labels = _images(WORKER_IMAGES, seed=11)
    dataset = TensorDataset(images, labels)
    loaders = {
        "sequential": DataLoader(dataset, batch_size=2),
        "distributed_sampler": DataLoader(
            dataset, batch_size=2, sampler=DistributedSampler(dataset, shuffle=False)
        ),
        "shuffled_sampler": DataLoader(
            dataset, batch_size=2, sampler=DistributedSampler(dataset, shuffle=True, seed=3)
        ),
    }
    for kind, loader in loaders.items():
        bank = MemoryBank.build(model, loader, dtype=torch.float64, progress=False)
        bank.save(out / f"{kind}_rank{rank}.safetensors")
    bank = MemoryBank.build(
        model, images, labels=labels, batch_size=2, dtype=torch.float64, progress=False
    )
    bank.save(out / f"tensors_rank{rank}.safetensors")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
