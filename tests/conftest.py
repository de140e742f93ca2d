import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_components():
    """The tiny random base model, built once per test session (read-only: do not modify)."""
    from bench.models import build_preset
    return build_preset("tiny")
