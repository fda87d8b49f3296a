"""Sphinx configuration of the captum-daam documentation site.

Build (warnings are errors)::

    pip install -e '.[docs]'
    sphinx-build -W --keep-going -b html docs /tmp/site

The Markdown pages of ``docs/`` are read by myst-parser; the API reference
(``docs/api/``) is written by autodoc from the package's Google-style docstrings
(napoleon). No warning class is silenced.

Intersphinx (links to torch, Captum and timm) needs the projects' inventories, which are
fetched over the network; an offline build cannot fetch them and each failure would be a
warning, i.e. an error under ``-W``. It is therefore opt-in: set
``CAPTUM_DAAM_DOCS_INTERSPHINX=1`` on a machine with internet access to link out. The
offline build (the default, and CI's) renders those names as plain literals.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import captum_daam  # noqa: E402  (after the path is set)

project = "captum-daam"
author = "captum-daam contributors"
copyright = "captum-daam contributors"
release = captum_daam.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# Scripts and result folders under docs/ are linked from the pages, not pages themselves.
exclude_patterns = ["_build", "evaluation/**/*.md", "**/.ipynb_checkpoints"]

# --- myst-parser: the existing Markdown pages -------------------------------------------
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3  # `page.md#a-heading` links resolve as on GitHub

# --- autodoc + napoleon: the API reference ----------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "separated"
autoclass_content = "class"
# The optional packages (extras ``eval``, ``hf``, ``quantus``) are imported lazily by the
# package, inside the functions that need them, so the site builds without them (checked
# by building with them hidden). They are mocked besides, as a guard should a module
# ever import one at the top (none of torch, timm, Captum or matplotlib imports them).
autodoc_mock_imports = ["pytorch_grad_cam", "transformers", "skimage", "scipy", "quantus"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# --- intersphinx: opt-in (see the module docstring) -------------------------------------
if os.environ.get("CAPTUM_DAAM_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "torch": ("https://pytorch.org/docs/stable", None),
        "captum": ("https://captum.ai/api", None),
    }
    # timm's documentation is built by Hugging Face's doc-builder, which publishes no
    # Sphinx inventory: timm names stay plain literals either way.

# --- HTML ---------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"captum-daam {release}"
html_static_path: list = []
