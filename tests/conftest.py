"""Shared fixtures: devices to test on (CUDA only when present), a cameraman test problem."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="no CUDA device"))


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(scope="session")
def cameraman64():
    from skimage import data
    from skimage.transform import resize

    return torch.tensor(resize(data.camera() / 255.0, (64, 64), anti_aliasing=True), dtype=torch.float64)


@pytest.fixture(scope="session")
def cameraman128():
    from skimage import data
    from skimage.transform import resize

    return torch.tensor(resize(data.camera() / 255.0, (128, 128), anti_aliasing=True), dtype=torch.float64)


def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (much faster than two on a shared, busy 2-core machine)."""
    yield from _one_thread()


@pytest.fixture(scope="module")
def single_thread_module():
    """One intra-op thread for a whole test module (``pytestmark = pytest.mark.usefixtures(...)``)."""
    yield from _one_thread()
