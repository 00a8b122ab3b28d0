"""``check_run``: what would stop a run after its data or model is built is found before, and named."""
import os

import pytest
import torch

from toco_fast.config import ConfigError, to_dict
from toco_fast.io.checkpoint import Checkpoint, checkpoint_path, save_checkpoint
from toco_fast.train.preflight import check_run, run_dir_for

from train_helpers import NUM_CLASSES, tiny_cfg


@pytest.fixture
def cfg(synthetic_root, tmp_path):
    return tiny_cfg(synthetic_root, f"train.run_dir={tmp_path / 'run'}")


def _trainer_checkpoint(cfg, path="/runs/a/checkpoints/iter_0000003.pt", **changes) -> Checkpoint:
    state = {"model": {}, "config": to_dict(cfg), "iteration": 3, "optimizer": {"state": {}}, "schedule": {},
             "rng": {}, **changes}
    return Checkpoint(path, state)


def test_a_good_config_passes(cfg):
    check_run(cfg)
    check_run(cfg, resume=_trainer_checkpoint(cfg))


def test_model_classes_must_match_the_dataset(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, f"model.num_classes={NUM_CLASSES + 1}", f"train.run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=rf"model.num_classes: {NUM_CLASSES + 1}, but the synthetic split 'train' "
                                          rf"\(data.train_split\) at .* has {NUM_CLASSES} classes"):
        check_run(cfg)


def test_batch_must_fit_the_training_split(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, "data.batch_size=14", f"train.run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"data.batch_size: 14 is larger than the training split 'train' "
                                          r"\(12 images at .*\); expected at most 12"):
        check_run(cfg)
    cfg = tiny_cfg(synthetic_root, "data.batch_size=12", f"train.run_dir={tmp_path}")
    check_run(cfg, world_size=2)
    with pytest.raises(ConfigError, match=r"data.batch_size: 20 is larger .*\(12 images at .*\); expected at most 12"):
        check_run(tiny_cfg(synthetic_root, "data.batch_size=20", f"train.run_dir={tmp_path}"), world_size=5)


def test_batch_must_split_evenly_among_processes(cfg):
    with pytest.raises(ConfigError, match=r"data.batch_size: 2 is the global batch, split evenly among the 3 "
                                          r"processes; expected a multiple of 3"):
        check_run(cfg, world_size=3)


def test_unknown_device(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, "train.device=tpu", f"train.run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"train.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"):
        check_run(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, "train.device=cuda", f"train.run_dir={tmp_path}")
    with pytest.raises(ConfigError, match=r"train.device: 'cuda' requested but CUDA is not available"):
        check_run(cfg)


def test_aux_layer_must_name_a_block(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, "model.aux_layer=-4", f"train.run_dir={tmp_path}")  # 3 blocks
    with pytest.raises(ConfigError, match=r"model.aux_layer: expected a block index in \[-3, 2\] for the 3-block"):
        check_run(cfg)


def test_run_dir_that_is_a_file(cfg, tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"train.run_dir: .*run is a file; expected a directory"):
        check_run(cfg)
    cfg.train.run_dir = str(tmp_path / "run" / "sub")
    with pytest.raises(ConfigError, match=r"train.run_dir: .*run/sub is a file \(.*run is in its way\)"):
        check_run(cfg)


def test_run_dir_that_is_not_writable(cfg, tmp_path, monkeypatch):
    # chmod does not stop root, who may run the tests: the probe's temporary file is refused instead.
    from toco_fast.io import paths

    def refused(dir=None, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(paths.tempfile, "TemporaryFile", refused)
    with pytest.raises(ConfigError, match=rf"train.run_dir: {tmp_path} is not writable \(Permission denied\)"):
        check_run(cfg)


def test_fresh_run_into_a_run_dir_with_checkpoints(cfg):
    save_checkpoint(checkpoint_path(cfg.train.run_dir, 3), {"model": {}})
    with pytest.raises(ConfigError, match=r"already holds checkpoints: pass --resume"):
        check_run(cfg)
    check_run(cfg, resume=_trainer_checkpoint(cfg))


def test_default_run_dir(cfg):
    cfg.train.run_dir = ""
    assert run_dir_for(cfg) == os.path.join("runs", cfg.name)


@pytest.mark.parametrize("missing", ["optimizer", "schedule", "rng"])
def test_resume_needs_the_trainer_state(cfg, missing):
    checkpoint = _trainer_checkpoint(cfg)
    del checkpoint.state[missing]
    with pytest.raises(ConfigError, match=rf"--resume /runs/a/checkpoints/iter_0000003.pt: the checkpoint has no "
                                          rf"{missing} state"):
        check_run(cfg, resume=checkpoint)


@pytest.mark.parametrize("override, key", [("model.num_classes=3", "num_classes"),
                                           ("model.backbone.depth=2", "backbone")])
def test_resume_keeps_the_model(cfg, synthetic_root, override, key):
    checkpoint = _trainer_checkpoint(tiny_cfg(synthetic_root, override, "model.aux_layer=-1"))
    with pytest.raises(ConfigError, match=rf"--resume .*iter_0000003.pt: model.{key} is .* but the checkpoint was "
                                          rf"trained with"):
        check_run(cfg, resume=checkpoint)


def test_pretrained_file_must_exist_and_be_a_file(cfg, tmp_path):
    cfg.model.pretrained = str(tmp_path)
    with pytest.raises(ConfigError, match=rf"pretrained: {tmp_path} is a directory; expected a checkpoint file"):
        check_run(cfg)
    cfg.model.pretrained = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"pretrained: checkpoint not found: .*missing.pth"):
        check_run(cfg)
    check_run(cfg, resume=_trainer_checkpoint(cfg))  # a resumed run takes its weights from the checkpoint


def test_nothing_is_built(cfg, monkeypatch):
    """Only the split lists are read: no image decoded, no loader or model built."""
    import toco_fast.data.layouts.source as source_module

    def fail(*args, **kwargs):
        raise AssertionError("check_run decoded an image")

    monkeypatch.setattr(source_module.ImageSource, "read_image", fail)
    check_run(cfg)
