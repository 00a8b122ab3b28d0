"""A tiny ToCo trained for a few iterations on a small synthetic set, for the inference, diagnostics and
command-line tests (a checkpoint "trained in the test": real CAMs, real files, in about a second)."""
import io
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train"))

from train_helpers import NUM_CLASSES, SIZE, tiny_cfg  # noqa: E402

__all__ = ["NUM_CLASSES", "SIZE", "train_tiny"]


def train_tiny(folder, iterations: int = 4, num_val: int = 4, overrides=()):
    """Generate a synthetic set (12 train, ``num_val`` val images of 64 px, 4 classes) under ``folder`` and train
    the training tests' tiny ViT ToCo on it; returns ``(run_dir, data_root)`` (str paths)."""
    from toco_fast.data import generate_synthetic
    from toco_fast.train.loop import train

    data_root = os.path.join(str(folder), "syn")
    generate_synthetic(data_root, num_train=12, num_val=num_val, num_classes=NUM_CLASSES, size=SIZE, seed=0)
    cfg = tiny_cfg(data_root, f"train.max_iters={iterations}", f"train.ckpt_iters={iterations}",
                   "eval.enabled=false", "loss.w_reg=0", *overrides)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, run_dir=os.path.join(str(folder), "run"), stream=io.StringIO())
    finally:
        torch.set_num_threads(previous)
    return os.path.join(str(folder), "run"), data_root
