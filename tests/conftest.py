import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_components():
    """The tiny random base model, built once per test session (read-only: do not modify)."""
    from bench.models import build_preset
    return build_preset("tiny")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine thread hand-offs made a
    tiny generate 100x slower. One thread also keeps timings of the suite predictable."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---- slow tests ------------------------------------------------------------------------------
# Tests marked `slow` build big real architectures (CLIP ViT-L/14, SAM ViT-H, ...) with random
# weights: minutes of CPU and gigabytes of memory. They skip unless BENCH_SLOW=1.
def pytest_configure(config):
    config.addinivalue_line("markers", "slow: big real architectures; skipped unless BENCH_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("BENCH_SLOW", "") == "1":
        return
    skip = pytest.mark.skip(reason="slow (big real architecture): set BENCH_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
