"""What the inference tests share: a small stand-in for ToCo's segmentation interface."""
import types

import pytest
import torch
import torch.nn as nn


class PatchSeg(nn.Module):
    """A stand-in with ToCo's call interface: stride-``patch`` embedding, a 3x3 head (so neighbours matter), and
    ToCo's refusal of sizes that are not multiples of the patch size."""

    def __init__(self, patch: int, num_classes: int = 5):
        super().__init__()
        self.patch_size = patch
        self.embed = nn.Conv2d(3, 8, patch, stride=patch)
        self.head = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x):
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"size {tuple(x.shape[-2:])} is not a multiple of {self.patch_size}")
        return types.SimpleNamespace(seg_logits=self.head(torch.tanh(self.embed(x))))


@pytest.fixture
def patch_seg():
    """The :class:`PatchSeg` class: ``patch_seg(patch=16, num_classes=3)``."""
    return PatchSeg


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``(run_dir, data_root)``: a tiny ToCo trained for 4 iterations on a 4-image synthetic val split
    (``tests/trained_helpers.py``), shared by the inference tests; do not write into it."""
    from trained_helpers import train_tiny

    return train_tiny(tmp_path_factory.mktemp("trained"))
