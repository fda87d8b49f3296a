"""The documentation: docstring examples run, and the API reference site builds.

* The examples of the modules in ``DOCTEST_MODULES`` are real doctests (random timm
  weights, nothing downloaded): they run here, with ``ELLIPSIS`` and
  ``NORMALIZE_WHITESPACE``.
* Where Sphinx is installed (the ``docs`` extra), the site is built with ``-W`` (every
  warning an error) and its inventory must hold every public name of the packages the
  reference covers, each once.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules whose docstring examples are all runnable offline, and cheap.
DOCTEST_MODULES = (
    "captum_daam.attr",
    "captum_daam.adapters.wrappers",
    "captum_daam.display",
    "captum_daam.input_space",
    "captum_daam.baselines.grid",
    "captum_daam.baselines.rollout",
    "captum_daam.baselines.raw_attention",
    "captum_daam.baselines.chefer",
    "captum_daam.baselines.grad_cam",
    "captum_daam.evaluation.similarity",
)

#: What each module needs beyond the package's own requirements.
NEEDS = {"captum_daam.evaluation.similarity": ("scipy", "skimage")}

#: The packages the API reference covers: every name of their ``__all__`` is documented.
PUBLIC_MODULES = (
    "captum_daam",
    "captum_daam.adapters",
    "captum_daam.baselines",
    "captum_daam.visualization",
    "captum_daam.viewer",
    "captum_daam.evaluation",
    "captum_daam.evaluation.methods",
    "captum_daam.quantus",
    "captum_daam.zoo",
)

#: Type aliases in ``__all__``: annotations, not API to document.
TYPE_ALIASES = {("captum_daam.visualization", "PathLike")}


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name):
    for extra in NEEDS.get(name, ()):
        pytest.importorskip(extra, reason=f"{name}'s examples need {extra} (extra 'eval')")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    runner = doctest.DocTestRunner(optionflags=flags)
    report = io.StringIO()
    tests = finder.find(module, name)
    for test in tests:
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0, report.getvalue()


def test_doctest_modules_are_the_ones_with_runnable_examples():
    """Every listed module has examples (a module that loses them leaves the list)."""
    for name in DOCTEST_MODULES:
        path = Path(importlib.util.find_spec(name).origin)
        assert ">>> " in path.read_text(encoding="utf-8"), name


def _documented(inventory_names, module_name, name, value):
    if f"{module_name}.{name}" in inventory_names:
        return True
    # Re-exports are documented once, under another public package (e.g. captum_daam.X
    # for what captum_daam.baselines also exports, visualization.FlowStyle for the viewer).
    for other in PUBLIC_MODULES:
        if f"{other}.{name}" in inventory_names:
            if getattr(importlib.import_module(other), name, None) is value:
                return True
    return False


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("sphinx", reason="the docs extra (sphinx, furo, myst-parser)")
    pytest.importorskip("furo", reason="the docs extra (sphinx, furo, myst-parser)")
    pytest.importorskip("myst_parser", reason="the docs extra (sphinx, furo, myst-parser)")
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if k != "CAPTUM_DAAM_DOCS_INTERSPHINX"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-E",
            "-q",
            "-b",
            "html",
            str(ROOT / "docs"),
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-8000:]
    return out


def test_site_builds_without_warnings_and_documents_the_public_api(site):
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", os.path.join)
    names = set()
    for kind, entries in getattr(inventory, "data", inventory).items():  # Sphinx 7-9
        if kind.startswith("py:"):
            names.update(entries)
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if (module_name, name) in TYPE_ALIASES:
                continue
            if not _documented(names, module_name, name, getattr(module, name)):
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names missing from the API reference: {missing}"
    for page in (
        "index",
        "method",
        "models",
        "captum_integration",
        "self_supervised",
        "evaluation",
        "benchmarks",
        "embedded_model",
        "architecture",
        "api/index",
    ):
        assert (site / f"{page}.html").is_file(), page
