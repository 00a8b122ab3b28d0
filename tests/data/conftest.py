"""Fixtures shared by the data tests: a small generated dataset in the VOC layout."""
import shutil

import pytest

from toco_fast.data.tools.make_synthetic import generate


@pytest.fixture(scope="session")
def small_set_pristine(tmp_path_factory):
    """A generated set (6 train, 2 val, 32 px, 4 classes); never modify it, use ``small_set``."""
    root = str(tmp_path_factory.mktemp("small_set") / "set")
    generate(root, num_train=6, num_val=2, num_classes=4, size=32, seed=5)
    return root


@pytest.fixture
def small_set(small_set_pristine, tmp_path):
    """A private copy of ``small_set_pristine`` that a test may damage."""
    copy = str(tmp_path / "set")
    shutil.copytree(small_set_pristine, copy)
    return copy


@pytest.fixture(scope="session")
def medium_set(tmp_path_factory):
    """A generated set (8 train, 3 val, 40 px, 5 classes); read only (copy it to change anything)."""
    root = str(tmp_path_factory.mktemp("medium_set") / "set")
    generate(root, num_train=8, num_val=3, num_classes=5, size=40, seed=11)
    return root


@pytest.fixture
def root(small_set):
    """The ``small_set`` folder, as the error and check tests name it."""
    return small_set
