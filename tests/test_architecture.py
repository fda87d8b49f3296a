"""The house rules of docs/architecture.md, checked on the package's source.

Imports point down (``_core`` <- ``adapters`` <- the explainers <- the consumers), the
evaluation uses the public API only, only the adapters read model attributes, and no
module does four jobs (450 lines at most, the procedural data generator excepted).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "captum_daam"

#: Rooms a room may import from (besides itself and the standard library / third parties).
ALLOWED = {
    "_core": {"_core", "errors"},
    "adapters": {"_core", "adapters", "errors"},
}
#: Modules the evaluation may not import: the maths and its hooks.
EVALUATION_FORBIDDEN = {"_core"}
#: Attributes that only an adapter reads on a model.
MODEL_ATTRIBUTES = {
    "get_classifier",
    "pretrained_cfg",
    "default_cfg",
    "blocks",
    "blocks_token_only",
    "cls_attn_blocks",
    "patch_embed",
    "forward_head",
}
MAX_LINES = 450
LONG_ALLOWED = {"zoo/synthetic.py"}


def _modules() -> Iterator[Tuple[Path, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.relative_to(PACKAGE).as_posix()


def _room(relative: str) -> str:
    return relative.split("/")[0].removesuffix(".py")


def _imported_rooms(path: Path, relative: str) -> Set[str]:
    """The top-level rooms of ``captum_daam`` that ``path`` imports."""
    tree = ast.parse(path.read_text())
    package_parts = relative.split("/")[:-1]
    rooms = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                if not target:  # "from . import x" at the top: x are rooms
                    rooms.update(alias.name for alias in node.names)
                else:
                    rooms.add(target[0])
            elif node.module and node.module.startswith("captum_daam."):
                rooms.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("captum_daam."):
                    rooms.add(alias.name.split(".")[1])
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_imports_point_down(room):
    offending = {}
    for path, relative in _modules():
        if _room(relative) != room:
            continue
        bad = _imported_rooms(path, relative) - ALLOWED[room]
        if bad:
            offending[relative] = sorted(bad)
    assert not offending, f"{room} imports rooms above it: {offending}"


def test_evaluation_uses_the_public_api_only():
    offending = {
        relative: sorted(_imported_rooms(path, relative) & EVALUATION_FORBIDDEN)
        for path, relative in _modules()
        if _room(relative) == "evaluation"
        and _imported_rooms(path, relative) & EVALUATION_FORBIDDEN
    }
    assert not offending, f"the evaluation reaches into the maths or its hooks: {offending}"
    for path, relative in _modules():
        if _room(relative) == "evaluation":
            assert "register_forward" not in path.read_text(), f"{relative} installs hooks"


def test_only_adapters_read_model_attributes():
    offending = []
    for path, relative in _modules():
        if _room(relative) in {"adapters", "zoo"}:  # the zoo builds its own model
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in MODEL_ATTRIBUTES:
                offending.append(f"{relative}:{node.lineno} .{node.attr}")
    assert not offending, "model internals read outside captum_daam/adapters: " + ", ".join(
        offending
    )


def test_no_module_does_four_jobs():
    long = {
        relative: len(path.read_text().splitlines())
        for path, relative in _modules()
        if relative not in LONG_ALLOWED and len(path.read_text().splitlines()) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_rules_can_fail(tmp_path):
    """The import check sees a relative import that climbs out of _core."""
    module = tmp_path / "flow.py"
    module.write_text("from ..attr import DAAM\nfrom .maps import block_maps\n")
    assert _imported_rooms(module, "_core/flow.py") == {"attr", "_core"}
