"""Property-based fuzzing of the files a user names: ``MemoryBank.load`` and the command
line (``--ssl --bank FILE``, ``--model NAME --weights FILE``) over generated bad files
(truncated banks, zero bytes, random bytes, random safetensors headers, pickles, wrong
extensions, wrong dimensions and dtypes, huge declared sizes, folders, symlink loops).

``MemoryBank.load`` must raise :class:`~captum_daam.errors.InvalidFileError` and nothing
else; the command line must exit with status 2 and exactly one line on stderr, never a
traceback.
"""

import functools
import io
import json
import os
import pickle
import struct
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from captum_daam import MemoryBank
from captum_daam.cli import main
from captum_daam.errors import InvalidFileError

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SUFFIXES = [".safetensors", ".pth", ".pt", ".bin", ".png", ""]


@functools.cache
def good_bank_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bank.safetensors"
        MemoryBank(
            torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.arange(5)
        ).save(path)
        return path.read_bytes()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _header_file(header, tail: bytes) -> bytes:
    """A safetensors-shaped file: a valid 8-byte length, then ``header`` as JSON."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + tail


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
tensor_entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(
            ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "C64", "F8_E5M2", "XX"]
        ),
        "shape": st.lists(st.integers(0, 2**62), max_size=3),
        "data_offsets": st.lists(st.integers(0, 2**62), min_size=2, max_size=2),
    }
)
random_headers = st.builds(
    _header_file,
    json_values
    | st.dictionaries(
        st.sampled_from(["features", "labels", "__metadata__", "head.weight"]),
        tensor_entries | json_values | st.just({"captum_daam": "memory_bank/1"}),
        max_size=3,
    ),
    st.binary(max_size=64),
)
truncated_banks = st.integers(0, 10**6).map(
    lambda n: good_bank_bytes()[: n % len(good_bank_bytes())]
)
huge_declared = st.tuples(st.integers(20, 62), st.integers(20, 62)).map(
    lambda e: (
        _header_file(
            {
                "__metadata__": {"captum_daam": "memory_bank/1"},
                "features": {
                    "dtype": "F32",
                    "shape": [2 ** e[0], 2 ** e[1]],
                    "data_offsets": [0, 2 ** e[0]],
                },
                "labels": {
                    "dtype": "I64",
                    "shape": [2 ** e[0]],
                    "data_offsets": [2 ** e[0], 2 ** e[0] + 8],
                },
            },
            b"\0" * 16,
        )
        if e[0] % 2
        else struct.pack("<Q", 2 ** e[1]) + b"{}"
    )
)
pickles = st.one_of(
    json_values.map(lambda v: pickle.dumps(v, protocol=2)),
    json_values.map(_torch_bytes),
    st.just(pickle.dumps(Evil())),
    st.just(_torch_bytes({"state_dict": Evil()})),
)


@st.composite
def wrong_dimensions(draw) -> bytes:
    """A real safetensors file of 'features' and 'labels' that cannot form a bank."""
    features_shape = draw(st.lists(st.integers(0, 4), max_size=3))
    labels_shape = draw(st.lists(st.integers(0, 4), max_size=2))
    features_dtype = draw(
        st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.uint8])
    )
    labels_dtype = draw(st.sampled_from([torch.int64, torch.int32, torch.float32, torch.bool]))
    fill = draw(st.sampled_from([0.0, 1.0, float("nan"), float("inf")]))
    valid = (
        len(features_shape) == 2
        and len(labels_shape) == 1
        and features_shape[0] == labels_shape[0] > 0
        and features_shape[1] > 0
        and features_dtype.is_floating_point
        and fill in (0.0, 1.0)
        and not labels_dtype.is_floating_point
        and labels_dtype != torch.bool
    )
    assume(not valid)
    features = torch.full(features_shape, fill).to(features_dtype)
    labels = torch.zeros(labels_shape).to(labels_dtype)
    metadata = draw(st.sampled_from([{"captum_daam": "memory_bank/1"}, {}, {"x": "y"}]))
    buffer = Path(tempfile.mkdtemp()) / "t.safetensors"
    save_file({"features": features, "labels": labels}, str(buffer), metadata=metadata)
    data = buffer.read_bytes()
    buffer.unlink()
    buffer.parent.rmdir()
    return data


bad_contents = st.one_of(
    truncated_banks,
    st.just(b""),
    st.binary(max_size=512),
    random_headers,
    huge_declared,
    pickles,
    wrong_dimensions(),
)
bad_files = st.one_of(
    st.tuples(st.just("file"), bad_contents, st.sampled_from(SUFFIXES)),
    st.tuples(
        st.sampled_from(["directory", "symlink_loop", "missing"]),
        st.just(b""),
        st.sampled_from(SUFFIXES),
    ),
)


def materialise(base: Path, kind: str, contents: bytes, suffix: str) -> Path:
    """The bad file (or path) of ``kind`` in a fresh folder under ``base``."""
    path = Path(tempfile.mkdtemp(dir=base)) / f"bad{suffix}"
    if kind == "file":
        path.write_bytes(contents)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink_loop":
        path.symlink_to(path)
    return path


def run_cli(*args) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, stdout: str, stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("captum-daam: error: "), stderr
    assert "Traceback" not in stderr and "pwned" not in stdout


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def tiny_image(base) -> Path:
    path = base / "tiny.png"
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(path)
    return path


def _wrong_labels_bank() -> bytes:
    """A real safetensors bank whose labels are floats: readable, but no bank (and, as
    weights, a state dict that fits no model)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bank.safetensors"
        save_file(
            {"features": torch.ones(3, 2), "labels": torch.zeros(3)},
            str(path),
            metadata={"captum_daam": "memory_bank/1"},
        )
        return path.read_bytes()


ALWAYS = [
    ("file", _wrong_labels_bank(), ".safetensors"),
    ("file", good_bank_bytes()[:100], ".safetensors"),
    ("file", pickle.dumps(Evil()), ".pth"),
    ("symlink_loop", b"", ".safetensors"),
]


def always_tried(test):
    """Run ``test`` on the :data:`ALWAYS` files as well as the generated ones."""
    for bad in ALWAYS:
        test = example(bad=bad)(test)
    return test


def test_the_bank_the_generators_start_from_loads(base):
    path = base / "good.safetensors"
    path.write_bytes(good_bank_bytes())
    assert len(MemoryBank.load(path)) == 5


@FUZZ
@given(bad=bad_files)
@always_tried
def test_memory_bank_load_raises_only_invalid_file_error(base, bad):
    path = materialise(base, *bad)
    with pytest.raises(InvalidFileError) as caught:
        MemoryBank.load(path)
    assert type(caught.value) is InvalidFileError and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


@FUZZ
@given(bad=bad_files)
@always_tried
def test_cli_with_a_bad_bank_is_one_line_and_status_2(base, tiny_image, bad):
    path = materialise(base, *bad)
    assert_one_line_error(
        *run_cli(
            "explain", tiny_image, "--ssl", "--bank", path, "--out", base / "out", "--device", "cpu"
        )
    )


@FUZZ
@given(bad=bad_files)
@always_tried
def test_cli_with_bad_weights_is_one_line_and_status_2(base, tiny_image, bad):
    path = materialise(base, *bad)
    assert_one_line_error(
        *run_cli(
            "explain",
            tiny_image,
            "--model",
            "deit_tiny_patch16_224",
            "--weights",
            path,
            "--out",
            base / "out",
            "--device",
            "cpu",
        )
    )
