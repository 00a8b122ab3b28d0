"""The diagnostics' pictures: numpy rendering, one image's panels, ``python -m toco_fast.diagnose`` end to end with
two checkpoints on one plot, and the one-line error without matplotlib."""
import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from toco_fast.cli.diagnose import main
from toco_fast.data import EvalDataset, open_source, voc_palette
from toco_fast.data.pictures import colorize_labels, jet, overlay, tile
from toco_fast.diagnose import image_panels, oversmoothing_curve
from toco_fast.model.factory import model_from_checkpoint


def test_numpy_rendering():
    np.testing.assert_allclose(jet(np.array([0.0, 1.0, 2.0])), [[0, 0, 0.5], [0.5, 0, 0], [0.5, 0, 0]], atol=1e-6)
    image = np.full((4, 5, 3), 100, np.uint8)
    picture = overlay(image, np.zeros((4, 5)))
    assert picture.dtype == np.uint8 and picture.shape == (4, 5, 3)
    np.testing.assert_array_equal(picture[0, 0], [40, 40, 116])  # 0.6 * (0, 0, 127.5) + 0.4 * 100
    labels = np.array([[0, 1], [15, 255]])
    np.testing.assert_array_equal(colorize_labels(labels), voc_palette()[labels])
    assert tile([image, np.zeros((8, 10, 3), np.uint8), image], columns=2, pad=1).shape == (11, 13, 3)
    with pytest.raises(ValueError, match="heat"):
        overlay(image, np.zeros((3, 3)))


def test_panels_of_one_image(trained_run):
    run_dir, data_root = trained_run
    model, cfg = model_from_checkpoint(run_dir)
    source = open_source("synthetic", data_root, "val")
    item = EvalDataset(source)[0]
    panels = image_panels(model, item, work_size=64, class_names=source.class_names)
    titles = [p.title for p in panels]
    classes = [f"CAM: {source.class_names[k + 1]}" for k in torch.nonzero(item["cls_label"]).reshape(-1).tolist()]
    assert titles == ["image", "ground truth", *classes, "aux CAM", "pseudo label", "prediction", "cls-token cosine"]
    assert all(p.picture.shape == (*item["mask"].shape, 3) and p.picture.dtype == np.uint8 for p in panels)


def test_diagnose_two_checkpoints_on_one_plot(tmp_path, capsys, trained_run):
    pytest.importorskip("matplotlib")
    from PIL import Image

    run_dir, data_root = trained_run
    ckpt = os.path.join(run_dir, "checkpoints", sorted(os.listdir(os.path.join(run_dir, "checkpoints")))[-1])
    out = tmp_path / "diag"
    assert main(["--checkpoint", run_dir, "--checkpoint", ckpt, "--label", "ToCo", "--label", "same", "--out",
                 str(out), "--grids", "2", "--curve-images", "3"]) == 0
    text = capsys.readouterr().out
    for label in ("ToCo", "same"):
        assert sorted(os.listdir(out / "grids" / label)) == ["val_000000.png", "val_000001.png"]
    with Image.open(out / "oversmoothing.png") as img:
        assert img.size[0] > 300
    with Image.open(out / "grids" / "ToCo" / "val_000000.png") as img:
        assert img.mode in ("RGBA", "RGB")
    rows = list(csv.reader(open(out / "oversmoothing.csv")))
    assert rows[0] == ["block", "ToCo", "same"] and len(rows) == 1 + 3
    model, cfg = model_from_checkpoint(run_dir)
    dataset = EvalDataset(open_source("synthetic", data_root, "val"))
    work = torch.nn.functional.interpolate(torch.stack([dataset[i]["image"] for i in range(3)]), size=(64, 64),
                                           mode="bilinear", align_corners=False)
    curve = oversmoothing_curve(model, [work], torch.device("cpu"))
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], curve, atol=1e-6)
    assert f"{out / 'oversmoothing.png'}" in text and "grid: " in text


def test_without_matplotlib_one_line_says_how_to_install_it(tmp_path, capsys, trained_run, no_module):
    no_module("matplotlib")
    assert main(["--checkpoint", trained_run[0], "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs matplotlib" in err[0] and "pip install 'toco_fast[plots]'" in err[0]
    assert not (tmp_path / "d").exists()


def test_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "toco_fast.diagnose", "--help"], capture_output=True, text=True,
                          check=True)
    assert "--curve-images" in done.stdout
