"""Shared test set-up. The suite mirrors the package: ``tests/<subpackage>/test_*.py``; helpers shared by several
folders (``tolerances``, ``lattice_helpers``) live here and are importable from every test file.

Without a GPU the Triton kernels run under the interpreter, which reads TRITON_INTERPRET when ``@triton.jit``
decorates a function, so it is set here, before any kernel module is imported.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped otherwise)")
    config.addinivalue_line("markers", "slow: larger cases, still CPU-friendly")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same RNG state."""
    torch.manual_seed(0)
    import numpy as np
    import random

    np.random.seed(0)
    random.seed(0)
    yield


@pytest.fixture(autouse=True)
def one_thread():
    """Test tensors are tiny: one intra-op thread avoids OpenMP barrier stalls on a busy 2-core runner."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def kernel_device() -> torch.device:
    """Where kernel tests put their tensors: the GPU when present, else the CPU (Triton interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
