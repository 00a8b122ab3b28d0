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


@pytest.fixture
def tiny_run(tmp_path):
    """A 3-image, 4-class synthetic val split and a run directory with one checkpoint of a tiny random ToCo
    (``cam.bkg_thre`` 0.3 and ``eval.crop_size`` 48, not the defaults): ``(run_dir, data_root)``."""
    from toco_fast.config import load_config, to_dict
    from toco_fast.data import generate_synthetic
    from toco_fast.io.checkpoint import checkpoint_path, save_checkpoint
    from toco_fast.model.factory import build_model

    data_root = tmp_path / "syn"
    generate_synthetic(str(data_root), num_train=1, num_val=3, num_classes=4, size=40)
    cfg = load_config("synthetic_tiny", [
        "model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 32}",
        "model.num_classes=4", "model.proj_dim=16", f"data.root={data_root}", "cam.bkg_thre=0.3",
        "eval.crop_size=48"])
    torch.manual_seed(0)
    save_checkpoint(checkpoint_path(tmp_path / "run", 1),
                    {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg), "iteration": 1})
    return tmp_path / "run", data_root
