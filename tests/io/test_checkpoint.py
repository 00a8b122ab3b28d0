"""Checkpoints: atomic writes survive a crash mid-write, discovery, clear errors, opening once; RNG capture."""
import errno
import os
import random

import numpy as np
import pytest
import torch

from toco_fast.io import checkpoint as ckpt
from toco_fast.io.rng import capture_rng_state, restore_rng_state


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
    state = capture_rng_state()
    path = ckpt.save_checkpoint(tmp_path / "rng.pt", {**_state(0), "rng": state})
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(3))
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    restore_rng_state(ckpt.load_checkpoint(path)["rng"])  # weights_only load of plain values
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)], np.random.randn(3))
    assert torch.equal(expected[0], again[0])
    np.testing.assert_array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    np.testing.assert_array_equal(expected[3], again[3])


def test_open_checkpoint_reads_once_and_knows_its_run_dir(tmp_path):
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 7), _state(7))
    opened = ckpt.open_checkpoint(tmp_path)
    assert opened.path == path and opened.state["iteration"] == 7
    assert opened.run_dir == os.path.abspath(tmp_path)


def test_full_disk_names_the_file_and_says_no_space(tmp_path, monkeypatch):
    """torch's zip writer turns a failed write into "unexpected pos ..."; the error says what happened, and where."""
    good = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), _state(1))
    real_save = torch.save

    class FullDisk:
        """A file on a disk that fills up after 1000 bytes."""

        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            if self.written + len(data) > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(data)
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    monkeypatch.setattr(torch, "save", lambda obj, handle: real_save(obj, FullDisk(handle)))
    target = ckpt.checkpoint_path(tmp_path, 2)
    with pytest.raises(ckpt.CheckpointWriteError) as caught:
        ckpt.save_checkpoint(target, {**_state(2), "big": torch.zeros(10000)})
    assert str(caught.value) == f"{target}: cannot save the checkpoint: no space left on device (errno ENOSPC)"
    assert "unexpected pos" in str(caught.value.__cause__)  # what torch itself said
    assert os.listdir(os.path.dirname(good)) == [os.path.basename(good)]
