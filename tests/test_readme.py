"""The README's first example runs offline as written, and its comments say true shapes."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def first_python_block(text: str) -> str:
    """The first fenced ```python block of a Markdown text."""
    match = re.search(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert match, "the README has no ```python block"
    return match.group(1)


def claimed_shapes(code: str):
    """``(expression, shape)`` for every line whose comment starts with a shape, e.g.
    ``final = daam.attribute(images)  # (4, 1, 8, 8): ...`` or ``a, b  # (4, 4) each``."""
    for line in code.splitlines():
        statement, _, comment = line.partition("#")
        shape = re.match(r"\s*\(([\d, ]+)\)", comment)
        if not statement.strip() or not shape:
            continue
        target = statement.split("=", 1)[0] if "=" in statement else statement
        dims = tuple(int(d) for d in shape.group(1).split(",") if d.strip())
        for expression in target.split(","):
            yield expression.strip(), dims


def test_readme_first_example_runs_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the hub
    code = first_python_block(README.read_text(encoding="utf-8"))
    for line in code.splitlines():  # the hub only in a comment that says it needs the hub
        if "pretrained=True" in line:
            assert line.lstrip().startswith("#") and "hub" in line, line
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README itself
    claims = list(claimed_shapes(code))
    assert len(claims) >= 5
    for expression, shape in claims:
        value = eval(expression, namespace)  # noqa: S307
        assert tuple(value.shape) == shape, f"README says {expression} is {shape}"
    frames = namespace["frames"]
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1


def test_claimed_shapes_reads_assignments_and_tuples():
    code = "x = f(y)   # (4, 1, 8, 8): D_B\na.b, c   # (2, 3) each\nz = 1  # a comment\n"
    assert list(claimed_shapes(code)) == [("x", (4, 1, 8, 8)), ("a.b", (2, 3)), ("c", (2, 3))]


def test_readme_upsample_sentence_matches_the_default():
    import inspect

    from captum_daam import upsample

    default = inspect.signature(upsample).parameters["mode"].default
    text = README.read_text(encoding="utf-8")
    assert default == "bilinear" and "bilinear" in first_python_block(text)
    assert "as LayerAttribution.interpolate" not in text
    assert "nearest" in (upsample.__doc__ or "") and "bilinear" in (upsample.__doc__ or "")
    with pytest.raises(AssertionError):
        first_python_block("no code here")
