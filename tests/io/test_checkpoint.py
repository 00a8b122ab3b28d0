"""Checkpoints: atomic writes survive a crash mid-write, discovery, RNG capture, model rebuild for evaluation."""
import os
import random

import numpy as np
import pytest
import torch

from toco_fast import checkpoint as ckpt
from toco_fast.config import apply_overrides, load_config, to_dict

TINY_BACKBONE = "model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 64}"


def _state(iteration: int):
    return {"model": {"w": torch.full((3,), float(iteration))}, "config": {"name": "t"}, "iteration": iteration}


def test_save_and_latest(tmp_path):
    for it in (5, 20, 10):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, it), _state(it))
    assert [it for it, _ in ckpt.list_checkpoints(tmp_path)] == [5, 10, 20]
    state = ckpt.load_checkpoint(tmp_path)
    assert state["iteration"] == 20 and torch.equal(state["model"]["w"], torch.full((3,), 20.0))
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [it for it, _ in ckpt.list_checkpoints(tmp_path)] == [10, 20]


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    good = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), _state(1))

    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # half the bytes reached the disk
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 2), _state(2))
    monkeypatch.undo()

    # No partial iter_2 file, no temporary left behind, and the run dir resolves to the intact checkpoint.
    assert [it for it, _ in ckpt.list_checkpoints(tmp_path)] == [1]
    assert os.listdir(os.path.dirname(good)) == [os.path.basename(good)]
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 1


def test_stray_partial_temp_file_is_ignored(tmp_path):
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 3), _state(3))
    folder = os.path.join(tmp_path, ckpt.CHECKPOINT_DIR)
    with open(os.path.join(folder, ".tmp-abc.pt"), "wb") as f:  # a writer killed by SIGKILL leaves this
        f.write(b"PK\x03\x04garbage")
    assert ckpt.latest_checkpoint(tmp_path).endswith("iter_0000003.pt")
    assert ckpt.load_checkpoint(tmp_path)["iteration"] == 3
    ckpt.prune_checkpoints(tmp_path, keep=5)
    assert not os.path.exists(os.path.join(folder, ".tmp-abc.pt"))


def test_corrupt_or_foreign_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt: not a readable toco_fast checkpoint"):
        ckpt.load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="lacks model, config, iteration"):
        ckpt.load_checkpoint(foreign)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing")


def test_rng_state_round_trip(tmp_path):
    state = ckpt.capture_rng_state()
    path = ckpt.save_checkpoint(tmp_path / "rng.pt", {**_state(0), "rng": state})
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(3))
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    ckpt.restore_rng_state(ckpt.load_checkpoint(path)["rng"])  # weights_only load of plain values
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(3))
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    np.testing.assert_array_equal(expected[3], again[3])


def test_build_model_from_checkpoint(tmp_path):
    cfg = apply_overrides(load_config("synthetic_tiny"), [TINY_BACKBONE])
    model = ckpt.build_model(to_dict(cfg)["model"])
    with torch.no_grad():
        model.proj_head_t.mlp[0].weight.add_(1.0)  # teacher head differs from student: it must be saved too
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 4), {"model": model.state_dict(), "config": to_dict(cfg),
                                                             "iteration": 4})
    rebuilt, config = ckpt.build_model_from_checkpoint(tmp_path)
    assert not rebuilt.training
    assert config == to_dict(cfg)
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    images = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(images).seg_logits, rebuilt(images).seg_logits)
