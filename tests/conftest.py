import os
from pathlib import Path

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
