"""Fixtures of the multi-process tests."""
import pytest


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from toco_fast.data import generate_synthetic

    root = str(tmp_path_factory.mktemp("synthetic"))
    generate_synthetic(root, num_train=12, num_val=3, num_classes=4, size=64, seed=0)
    return root
