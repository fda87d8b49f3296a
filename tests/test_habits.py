"""Project habits: ``python -m captum_daam``, the typing marker, and the logits check that
``class_scores``, the baselines' predicted class and ``explain_top_k`` share."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import captum_daam
from captum_daam import InvalidInputError, UnsupportedModelError
from captum_daam._core.targets import logits_tensor


def test_python_dash_m_runs_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "captum_daam", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage: captum-daam" in done.stdout


def test_the_package_is_marked_typed():
    assert (Path(captum_daam.__file__).parent / "py.typed").is_file()


def test_logits_tensor_passes_logits_and_names_what_else_it_got():
    logits = torch.randn(2, 5)
    assert logits_tensor(logits) is logits
    with pytest.raises(InvalidInputError, match="tuple"):
        logits_tensor((logits, logits))
    with pytest.raises(UnsupportedModelError, match=r"\(2, 5, 3\)"):
        logits_tensor(torch.randn(2, 5, 3))
    with pytest.raises(UnsupportedModelError, match="dict"):
        logits_tensor({"logits": logits})
