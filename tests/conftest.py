import os
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=8)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder (``CAPTUM_DAAM_DATA``); skips when it is not available."""
    root = os.environ.get("CAPTUM_DAAM_DATA")
    if not root:
        pytest.skip("CAPTUM_DAAM_DATA is not set: real-weight tests need ../shared/data")
    path = Path(root)
    if not (path / "deit_tiny_patch16_224" / "model.safetensors").is_file():
        pytest.skip(f"CAPTUM_DAAM_DATA={root} holds no deit_tiny_patch16_224 weights")
    return path


#: Tools named here (comma-separated) must be present: a test that needs one fails
#: instead of skipping. ``.ci/run`` sets it for the tools it installed or found.
REQUIRE_TOOLS = "CAPTUM_DAAM_REQUIRE_TOOLS"


def required_tools(environ: Mapping[str, str] = os.environ) -> frozenset:
    """The tools ``CAPTUM_DAAM_REQUIRE_TOOLS`` names (``"chromium,ffmpeg"``)."""
    return frozenset(
        t.strip().lower() for t in environ.get(REQUIRE_TOOLS, "").split(",") if t.strip()
    )


def missing_tool(tool: str, reason: str, environ: Mapping[str, str] = os.environ) -> NoReturn:
    """Skip the calling test because ``tool`` is missing, or fail it where
    ``CAPTUM_DAAM_REQUIRE_TOOLS`` names ``tool`` (CI installed it, so a skip would hide a
    broken install)."""
    if tool.lower() in required_tools(environ):
        pytest.fail(
            f"{reason}; but {REQUIRE_TOOLS}={environ[REQUIRE_TOOLS]!r} requires {tool}: "
            "the install step did not leave it on PATH",
            pytrace=False,
        )
    pytest.skip(reason)
