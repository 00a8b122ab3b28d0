"""``python -m toco_fast.train`` answers bad input with one ``error:`` line on stderr and exit status 2, never a
traceback, and prints it once in a torchrun world."""
import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch

from toco_fast.cli import train as train_cli
from toco_fast.cli.common import input_error_message
from toco_fast.config import load_config, to_dict
from toco_fast.data import DataError
from toco_fast.io.checkpoint import checkpoint_path, save_checkpoint


def run(capsys, *argv):
    """``main(argv)``'s exit status and stderr."""
    status = train_cli.main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_one_error_line(status, err, *fragments):
    assert status == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("override, fragments", [
    ("optim.lr=[1", ["override 'optim.lr=[1': the value is not valid YAML"]),
    ("optim.lr=-1e-4", ["optim.lr: expected a finite number >= 0, got -0.0001"]),
    ("optim.lr=.nan", ["optim.lr: expected a finite number >= 0, got nan"]),
    ("data.crop_size=60", ["data.crop_size: expected a multiple of the backbone's patch size 16", "got 60"]),
    ("eval.crop_size=72", ["eval.crop_size: expected a multiple of the backbone's patch size 16"]),
    ("data.batch_size=14", ["data.batch_size: 14 is larger than the training split 'train' (12 images"]),
    ("model.num_classes=5", ["model.num_classes: 5, but the synthetic split 'train'", "has 4 classes"]),
    ("train.device=tpu", ["train.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"]),
])
def test_bad_values(capsys, tiny_config, tmp_path, override, fragments):
    assert_one_error_line(*run(capsys, "--config", tiny_config, "--set", override, "--run-dir", tmp_path / "r"),
                          *fragments)
    assert not (tmp_path / "r").exists()  # found before anything was written


def test_bad_yaml_file(capsys, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: {max_iters: 5\n")
    assert_one_error_line(*run(capsys, "--config", path), f"{path}: not valid YAML")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(capsys, tiny_config, tmp_path):
    assert_one_error_line(*run(capsys, "--config", tiny_config, "--device", "cuda", "--run-dir", tmp_path / "r"),
                          "train.device: 'cuda' requested but CUDA is not available")


def test_run_dir_with_checkpoints_needs_resume(capsys, tiny_config, tmp_path):
    save_checkpoint(checkpoint_path(tmp_path / "r", 1), {"model": {}})
    assert_one_error_line(*run(capsys, "--config", tiny_config, "--run-dir", tmp_path / "r"),
                          "already holds checkpoints: pass --resume")


def test_run_dir_that_is_a_file(capsys, tiny_config, tmp_path):
    (tmp_path / "r").write_text("")
    assert_one_error_line(*run(capsys, "--config", tiny_config, "--run-dir", tmp_path / "r"),
                          f"train.run_dir: {tmp_path / 'r'} is a file")


@pytest.mark.parametrize("content, fragment", [
    ("text", "is not a readable checkpoint"),
    ("folder", "is a directory; expected a checkpoint file"),
    ({"conv1.weight": torch.zeros(2, 3, 7, 7)}, "backbone weights did not load"),
])
def test_bad_pretrained_file(capsys, tiny_config, tmp_path, content, fragment):
    path = tmp_path / "weights.pth"
    if content == "text":
        path.write_text("not weights\n")
    elif content == "folder":
        path.mkdir()
    else:
        torch.save(content, path)
    assert_one_error_line(*run(capsys, "--config", tiny_config, "--pretrained", path, "--run-dir", tmp_path / "r"),
                          str(path), fragment)


def _write_checkpoint(tiny_config, tmp_path, **state):
    path = checkpoint_path(tmp_path / "old", 1)
    save_checkpoint(path, {"model": {}, "config": to_dict(load_config(tiny_config)), "iteration": 1, **state})
    return path


def test_resume_of_a_weights_only_checkpoint(capsys, tiny_config, tmp_path):
    path = _write_checkpoint(tiny_config, tmp_path)
    assert_one_error_line(*run(capsys, "--resume", path),
                          f"--resume {path}: the checkpoint has no optimizer / schedule / rng state")


def test_resume_with_another_class_count(capsys, tiny_config, tmp_path):
    path = _write_checkpoint(tiny_config, tmp_path, optimizer={}, schedule={}, rng={})
    assert_one_error_line(*run(capsys, "--resume", path, "--set", "model.num_classes=3"),
                          f"--resume {path}: model.num_classes is 3 but the checkpoint was trained with 4")


@pytest.mark.parametrize("rank", ["0", "1"])
def test_batch_not_divisible_by_ranks_is_reported_by_rank_0_only(capsys, tiny_config, tmp_path, monkeypatch, rank):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", rank)
    status, err = run(capsys, "--config", tiny_config, "--run-dir", tmp_path / "r")
    if rank == "0":
        assert_one_error_line(status, err, "data.batch_size: 2 is the global batch, split evenly among the 4 "
                                           "processes; expected a multiple of 4")
    else:
        assert (status, err) == (2, "")


def test_full_disk_while_saving_a_checkpoint(capsys, tiny_config, tmp_path, monkeypatch):
    real_save = torch.save

    def save_on_full_disk(obj, handle):
        class Full:
            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def flush(self):
                pass

        real_save(obj, Full())

    monkeypatch.setattr(torch, "save", save_on_full_disk)
    target = checkpoint_path(tmp_path / "r", 1)
    assert_one_error_line(*run(capsys, "--config", tiny_config, "--run-dir", tmp_path / "r"),
                          f"error: {target}: cannot save the checkpoint: no space left on device")


def test_a_data_loader_workers_error_is_its_own_message():
    """A worker's exception comes back through torch's ExceptionWrapper, its traceback pasted into the message."""
    from torch._utils import ExceptionWrapper

    try:
        try:
            raise DataError("/data/img_0.png: cannot read image (truncated file)")
        except DataError:
            ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0").reraise()
    except DataError as exc:
        raised, message = str(exc), input_error_message(exc)
    assert raised.startswith("Caught DataError in DataLoader worker process 0.\nOriginal Traceback")
    assert message == "/data/img_0.png: cannot read image (truncated file)"


def test_unreadable_image_met_by_a_worker_end_to_end(synthetic_root, tiny_config, tmp_path):
    """The real command: a worker process decodes a corrupt image; one line, exit status 2, no traceback."""
    root = shutil.copytree(synthetic_root, tmp_path / "data")
    for name in os.listdir(root / "JPEGImages"):
        if name.startswith("train_"):
            (root / "JPEGImages" / name).write_bytes(b"garbage")
    done = subprocess.run([sys.executable, "-m", "toco_fast.train", "--config", tiny_config, "--set",
                           f"data.root={root}", "--set", "data.num_workers=1", "--run-dir", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert_one_error_line(done.returncode, done.stderr, f"error: {root / 'JPEGImages'}/train_",
                          ".png: cannot read image (cannot identify image file", f"data.root='{root}'")


@pytest.mark.parametrize("rank, any_rank, printed", [("0", False, True), ("1", False, False), ("1", True, True)])
def test_report_input_error_prints_once_per_world(capsys, monkeypatch, rank, any_rank, printed):
    from toco_fast.cli.common import INPUT_ERROR_STATUS, report_input_error

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert report_input_error(ValueError("x: bad\nsecond line"), hint="see y", any_rank=any_rank) == INPUT_ERROR_STATUS
    assert capsys.readouterr().err == ("error: x: bad second line (see y)\n" if printed else "")
