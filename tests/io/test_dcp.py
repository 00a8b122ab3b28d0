"""Sharded (DCP) checkpoint folders: round trip in one process, an interrupted save never leaves a folder (or a
checkpoint) that a resume would pick up, pruning takes the folders along."""
import os

import pytest
import torch

from toco_fast.io import checkpoint as ckpt
from toco_fast.io import dcp as dcp_io


def _sharded_checkpoint(run_dir, iteration):
    """A checkpoint file and its DCP folder, written in the trainer's order (folder first)."""
    path = ckpt.checkpoint_path(run_dir, iteration)
    folder = ckpt.sharded_folder(path)
    dcp_io.save_sharded({"model": {"w": torch.full((4,), float(iteration))}}, folder)
    ckpt.save_checkpoint(path, {"model": {}, "config": {}, "iteration": iteration,
                                "optimizer": {"sharded": os.path.basename(folder)}})
    return path, folder


def test_round_trip_and_checkpoint_names_its_folder(tmp_path):
    path, folder = _sharded_checkpoint(tmp_path, 3)
    assert folder.endswith("iter_0000003.dcp") and os.path.isfile(os.path.join(folder, ".metadata"))
    opened = ckpt.open_checkpoint(tmp_path)
    assert opened.sharded_folder == folder
    template = {"model": {"w": torch.zeros(4)}}
    dcp_io.load_sharded(template, opened.sharded_folder)
    assert torch.equal(template["model"]["w"], torch.full((4,), 3.0))
    assert ckpt.Checkpoint(path, {"optimizer": {"state": {}}}).sharded_folder is None  # a replicated run's file


def test_interrupted_save_leaves_nothing_a_resume_picks_up(tmp_path, monkeypatch):
    _sharded_checkpoint(tmp_path, 1)
    real_save = dcp_io.dcp_api().save

    def killed(state, checkpoint_id, **kwargs):
        real_save(state, checkpoint_id=checkpoint_id, **kwargs)
        raise KeyboardInterrupt  # after the shards, before the rename

    monkeypatch.setattr(dcp_io.dcp_api(), "save", killed)
    with pytest.raises(KeyboardInterrupt):
        _sharded_checkpoint(tmp_path, 2)
    monkeypatch.undo()
    folder = tmp_path / ckpt.CHECKPOINT_DIR
    assert sorted(os.listdir(folder)) == [".tmp-iter_0000002.dcp", "iter_0000001.dcp", "iter_0000001.pt"]
    assert ckpt.open_checkpoint(tmp_path).state["iteration"] == 1

    # Killed between the folder and the file: the folder is an orphan, the latest checkpoint is still iteration 1.
    dcp_io.save_sharded({"model": {"w": torch.zeros(4)}}, ckpt.sharded_folder(ckpt.checkpoint_path(tmp_path, 2)))
    assert ckpt.open_checkpoint(tmp_path).state["iteration"] == 1
    _sharded_checkpoint(tmp_path, 3)
    ckpt.prune_checkpoints(tmp_path, keep=1)
    assert sorted(os.listdir(folder)) == ["iter_0000003.dcp", "iter_0000003.pt"]


def test_file_whose_folder_is_missing_is_refused(tmp_path):
    path, folder = _sharded_checkpoint(tmp_path, 5)
    os.remove(os.path.join(folder, ".metadata"))
    with pytest.raises(ValueError, match="iter_0000005.dcp is missing or incomplete; resume from an earlier"):
        ckpt.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="not a complete sharded checkpoint"):
        dcp_io.load_sharded({"model": {"w": torch.zeros(4)}}, folder)
