"""Fixtures of the command-line tests: a small synthetic set and the training tests' tiny config
(``tests/train/train_helpers.py``) written as a YAML file."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "train"))

from train_helpers import NUM_CLASSES, SIZE, tiny_cfg  # noqa: E402


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from toco_fast.data import generate_synthetic

    root = str(tmp_path_factory.mktemp("synthetic"))
    generate_synthetic(root, num_train=12, num_val=3, num_classes=NUM_CLASSES, size=SIZE, seed=0)
    return root


@pytest.fixture
def tiny_config(synthetic_root, tmp_path):
    """Path of a YAML config: the tiny training config on ``synthetic_root``, one iteration, no evaluation."""
    from toco_fast.config import save_config

    path = str(tmp_path / "tiny.yaml")
    save_config(tiny_cfg(synthetic_root, "train.max_iters=1", "eval.enabled=false"), path)
    return path
