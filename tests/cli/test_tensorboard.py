"""``python -m toco_fast.train --tensorboard``: losses, lr, img/s, eval mIoU and CAM grids in RUN/tensorboard; one
``error:`` line naming the extra when tensorboard is missing."""
import os

import pytest

from train_helpers import tiny_cfg
from toco_fast.cli import train as train_cli
from toco_fast.config import save_config


def _config(synthetic_root, tmp_path):
    path = str(tmp_path / "tb.yaml")
    save_config(tiny_cfg(synthetic_root, "train.max_iters=2", "train.log_iters=1", "train.eval_iters=2",
                         "train.ckpt_iters=2", "eval.max_images=1", "loss.w_reg=0"), path)
    return path


def test_tensorboard_events(tmp_path, capsys, synthetic_root):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert train_cli.main(["--config", _config(synthetic_root, tmp_path), "--run-dir", str(run),
                           "--tensorboard"]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars, images = set(events.Tags()["scalars"]), events.Tags()["images"]
    assert {"train/loss", "train/cls", "train/lr", "train/img/s", "eval/CAM_mIoU", "eval/aux_CAM_mIoU",
            "eval/Seg_Pred_mIoU"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert images and all(tag.startswith("cams/val_") for tag in images)
    assert events.Images(images[0])[0].width > events.Images(images[0])[0].height  # panels side by side
    capsys.readouterr()


def test_missing_tensorboard_is_one_line(tmp_path, capsys, synthetic_root, monkeypatch):
    import importlib

    import toco_fast._extras as extras

    real = importlib.import_module

    def without_tensorboard(name, *args):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ModuleNotFoundError("No module named 'tensorboard'")
        return real(name, *args)

    monkeypatch.setattr(extras.importlib, "import_module", without_tensorboard)
    status = train_cli.main(["--config", _config(synthetic_root, tmp_path), "--run-dir", str(tmp_path / "r"),
                             "--tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert "train.tensorboard (--tensorboard) needs tensorboard" in err[0]
    assert "pip install 'toco_fast[tensorboard]'" in err[0]
    assert not os.path.exists(tmp_path / "r" / "tensorboard")
