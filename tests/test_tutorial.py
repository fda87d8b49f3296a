"""docs/tutorial.ipynb runs top to bottom in a fresh Jupyter kernel on this Python.

Each test executes the notebook with nbclient, as a user's "Run all" would, and fails on
the first cell that raises. The kernel is started from a kernel spec written for the
test that names this interpreter (``sys.executable``), so a ``python3`` kernel installed
elsewhere on the machine cannot stand in for it; a first cell checks that it did not.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator, List

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
#: Seconds any one cell may take (the whole notebook takes under a minute on 2 cores).
CELL_TIMEOUT = 300
PROBE = "import sys\nprint(sys.prefix)"


@pytest.fixture
def kernel_on_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``python3`` kernel spec naming this interpreter, first on ``JUPYTER_PATH``;
    returns the folder the notebook runs in."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (captum-daam tests)",
                "language": "python",
            }
        )
    )
    path = os.pathsep.join(
        filter(None, [str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH")])
    )
    monkeypatch.setenv("JUPYTER_PATH", path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))  # the viewer page lands in pytest's tmp_path
    return work


def execute(work: Path, *prelude: str) -> nbformat.NotebookNode:
    """The notebook, executed in a fresh kernel after a probe cell and ``prelude`` cells;
    raises ``CellExecutionError`` on the first cell that fails."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    extra = [nbformat.v4.new_code_cell(source) for source in (PROBE, *prelude)]
    notebook.cells[:0] = extra
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()
    return notebook


def code_cells(notebook: nbformat.NotebookNode) -> Iterator[nbformat.NotebookNode]:
    return (cell for cell in notebook.cells if cell.cell_type == "code")


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def pictures(notebook: nbformat.NotebookNode) -> List[int]:
    """Indices of the code cells that show at least one PNG picture."""
    return [
        i
        for i, cell in enumerate(code_cells(notebook))
        if any("image/png" in out.get("data", {}) for out in cell.outputs)
    ]


def check_run(notebook: nbformat.NotebookNode) -> str:
    """The checks every run passes; returns everything the notebook printed."""
    cells = list(code_cells(notebook))
    assert printed(cells[0]).strip() == sys.prefix, "the kernel runs another Python"
    for cell in cells:
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert not errors, (cell.source, errors)
    # The flow figure, the side-by-side comparison and the NoiseTunnel figure.
    assert len(pictures(notebook)) >= 3, pictures(notebook)
    text = "\n".join(printed(cell) for cell in cells)
    for method in ("DAAM", "Grad-CAM", "Integrated Gradients", "uniform map"):
        assert re.search(rf"^{method} +[-\d.e]+ +[-\d.e]+$", text, re.M), (method, text)
    assert "SmoothGrad over DAAM" in text
    viewer = re.search(r"^wrote (\S+flow_viewer\.html) ", text, re.M)
    assert viewer, text
    page = Path(viewer.group(1)).read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    return text


def test_tutorial_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert notebook.metadata.kernelspec.name == "python3"


def test_tutorial_runs_on_the_embedded_model_without_quantus(
    kernel_on_this_python: Path, monkeypatch: pytest.MonkeyPatch
):
    """No data folder and no Quantus: the embedded model, and the Quantus cell says how
    to install it instead of failing."""
    monkeypatch.delenv("CAPTUM_DAAM_DATA", raising=False)
    hide_quantus = "import sys\nsys.modules['quantus'] = None  # `import quantus` fails"
    text = check_run(execute(kernel_on_this_python, hide_quantus))
    assert "the embedded model" in text
    assert "Quantus is not installed: pip install 'captum-daam[quantus]'" in text


def test_tutorial_runs_on_deit_tiny(
    kernel_on_this_python: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """DeiT-Tiny with its ImageNet weights on three real images; with Quantus when it is
    installed (the ``quantus`` extra)."""
    monkeypatch.setenv("CAPTUM_DAAM_DATA", str(data_dir))
    text = check_run(execute(kernel_on_this_python))
    assert "DeiT-Tiny with ImageNet weights" in text
    for name in ("bittern", "peacock", "badger"):
        assert f"explained class '{name}'" in text, text
    try:
        import quantus  # noqa: F401
    except ImportError:
        assert "Quantus is not installed" in text
    else:
        assert len(re.findall(r"Sparseness [\d.]+, MaxSensitivity [\d.]+", text)) == 3, text
