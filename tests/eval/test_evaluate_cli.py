"""``python -m toco_fast.evaluate`` (``toco_fast.cli.evaluate``): exact numbers on a PNG folder, errors that name the
file, checkpoint mode with the checkpoint's typed CAM / evaluation settings, a class-count mismatch and an unwritable
``--out-json`` failing before the run, and the flags of the entry point."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.cli.evaluate import build_parser, main

EVALUATE_FLAGS = {"-h", "--help", "--pred-dir", "--checkpoint", "--dataset", "--root", "--split", "--lists-dir",
                  "--image-root", "--mask-root", "--ignore-index", "--out-json", "--workers", "--max-images",
                  "--device", "--crop-size", "--cam-scales"}


def test_cli_pred_dir_gives_the_exact_numbers(voc_like, official_scores, capsys):
    root, pred_dir, names, masks, preds = voc_like
    out_json = pred_dir.parent / "scores.json"
    assert main(["--pred-dir", str(pred_dir), "--dataset", "voc", "--root", str(root), "--split", "val",
                 "--workers", "0", "--out-json", str(out_json)]) == 0
    official = official_scores([m.astype(np.int64) for m in masks], [p.astype(np.int64) for p in preds], 21)
    report = json.loads(out_json.read_text())
    result = report["results"]["Seg_Pred"]
    assert result["miou"] == pytest.approx(official["miou"], rel=1e-12)
    assert result["pAcc"] == pytest.approx(official["pAcc"], rel=1e-12)
    assert result["iou"]["aeroplane"] == pytest.approx(official["iou"][1], rel=1e-12)
    assert result["iou"]["bird"] is None  # class 3: nowhere
    assert report["pred_dir"] == os.path.abspath(pred_dir) and report["dataset"] == "voc"
    assert report["split"] == "val"
    table = capsys.readouterr().out
    assert "aeroplane" in table and f"{100 * official['miou']:.3f}" in table


def test_cli_pred_dir_writes_metrics_json_beside_the_predictions_by_default(voc_like, capsys):
    root, pred_dir, names, masks, preds = voc_like
    assert main(["--pred-dir", str(pred_dir), "--dataset", "voc", "--root", str(root), "--workers", "0",
                 "--device", "no-such-device"]) == 0  # --device is a checkpoint-mode flag
    assert json.loads((pred_dir / "metrics.json").read_text())["results"]["Seg_Pred"]["num_pixels"] > 0
    assert f"wrote {pred_dir / 'metrics.json'}" in capsys.readouterr().out


def test_cli_missing_prediction_and_size_mismatch_name_the_file(voc_like, capsys):
    root, pred_dir, names, masks, preds = voc_like
    argv = ["--pred-dir", str(pred_dir), "--dataset", "voc", "--root", str(root), "--workers", "0"]
    os.remove(pred_dir / "b_2.png")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(pred_dir / "b_2.png") in err and "not found" in err

    Image.fromarray(np.zeros((5, 6), dtype=np.uint8)).save(pred_dir / "b_2.png")
    assert main(argv) == 2
    err = capsys.readouterr().err
    h, w = masks[1].shape
    assert str(pred_dir / "b_2.png") in err and "6x5" in err and f"{w}x{h}" in err


def test_cli_without_dataset_or_checkpoint_config_is_an_input_error(voc_like, capsys):
    root, pred_dir, names, masks, preds = voc_like
    assert main(["--pred-dir", str(pred_dir), "--workers", "0"]) == 2
    assert "--dataset and --root are required" in capsys.readouterr().err


def test_cli_checkpoint_mode_uses_the_checkpoint_settings(tiny_run, tmp_path, monkeypatch, capsys):
    from toco_fast.data import EvalDataset, build_val_loader, open_source
    from toco_fast.eval import validation
    from toco_fast.io.checkpoint import resolve_checkpoint
    from toco_fast.model.factory import model_from_checkpoint

    run_dir, data_root = tiny_run
    calls = []
    real_evaluate_model = validation.evaluate_model

    def recording_evaluate_model(model, loader, **kwargs):
        calls.append(kwargs)
        return real_evaluate_model(model, loader, **kwargs)

    monkeypatch.setattr(validation, "evaluate_model", recording_evaluate_model)
    out_json = tmp_path / "ckpt.json"
    assert main(["--checkpoint", str(run_dir), "--workers", "0", "--device", "cpu", "--cam-scales", "1.0", "0.5",
                 "--crop-size", "32", "--out-json", str(out_json)]) == 0
    ckpt = resolve_checkpoint(run_dir)
    model, config = model_from_checkpoint(ckpt)
    assert calls[0]["cam"] == dataclasses.replace(config.cam, scales=(1.0, 0.5))
    assert calls[0]["cam"].bkg_thre == 0.3 and calls[0]["crop_size"] == 32
    source = open_source("synthetic", str(data_root), "val")
    expected = real_evaluate_model(model, build_val_loader(EvalDataset(source)), num_classes=4,
                                   class_names=source.class_names, cam=calls[0]["cam"], crop_size=32,
                                   ignore_index=source.ignore_index)
    report = json.loads(out_json.read_text())
    assert report["checkpoint"] == os.path.abspath(ckpt)
    assert (report["dataset"], report["split"]) == ("synthetic", "val")
    assert list(report["results"]) == ["CAM", "aux_CAM", "Seg_Pred"]
    for name, metric in expected.items():
        assert report["results"][name] == metric.to_dict(), name
    assert "CAM" in capsys.readouterr().out

    # Defaults: the checkpoint's cam.scales and eval.crop_size; the JSON goes to RUN_DIR/eval/<split>_<ckpt>.json.
    assert main(["--checkpoint", str(run_dir), "--workers", "0", "--device", "cpu", "--max-images", "1"]) == 0
    assert calls[1]["cam"] == config.cam and calls[1]["crop_size"] == 48
    default_json = run_dir / "eval" / f"val_{os.path.splitext(os.path.basename(ckpt))[0]}.json"
    first = open_source("synthetic", str(data_root), "val").read_mask(0)
    assert json.loads(default_json.read_text())["results"]["Seg_Pred"]["num_pixels"] == int((first != 255).sum())
    capsys.readouterr()


def test_cli_bad_device_and_missing_checkpoint_are_input_errors(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    assert "nowhere" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--checkpoint", str(tmp_path / "nowhere"), "--device", "cuda"]) == 2
        assert "--device: 'cuda' requested but CUDA is not available" in capsys.readouterr().err


def _one_error_line(err: str) -> str:
    """The single ``error: ...`` line of ``err`` (fails when there are several lines or a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def no_run(monkeypatch):
    """Make both evaluations fail the test if they start (the checks must come first)."""
    from toco_fast.cli import evaluate
    from toco_fast.eval import validation

    def started(*args, **kwargs):
        raise AssertionError("the evaluation ran")

    monkeypatch.setattr(evaluate, "evaluate_prediction_dir", started)
    monkeypatch.setattr(validation, "evaluate_model", started)


def test_cli_checkpoint_class_count_mismatch_fails_before_the_run(tiny_run, tmp_path, no_run, capsys):
    from toco_fast.data import generate_synthetic
    from toco_fast.io.checkpoint import resolve_checkpoint

    run_dir, _ = tiny_run
    six = tmp_path / "six"
    generate_synthetic(str(six), num_train=1, num_val=2, num_classes=6, size=40)
    out_json = tmp_path / "e.json"
    assert main(["--checkpoint", str(run_dir), "--dataset", "synthetic", "--root", str(six), "--split", "val",
                 "--workers", "0", "--device", "cpu", "--out-json", str(out_json)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(resolve_checkpoint(run_dir)) in line and str(six) in line and "'val'" in line
    assert "predicts 4 classes" in line and "has 6 classes" in line
    assert not out_json.exists()


def test_cli_out_json_folder_or_unwritable_parent_fails_before_the_run(voc_like, tiny_run, tmp_path, no_run,
                                                                       capsys):
    root, pred_dir, names, masks, preds = voc_like
    run_dir, _ = tiny_run
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    pred_argv = ["--pred-dir", str(pred_dir), "--dataset", "voc", "--root", str(root), "--workers", "0"]
    ckpt_argv = ["--checkpoint", str(run_dir), "--workers", "0", "--device", "cpu"]
    for argv in (pred_argv, ckpt_argv):
        assert main(argv + ["--out-json", str(tmp_path)]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line == (f"error: --out-json: {tmp_path}: is a folder (expected a file path, e.g. "
                        f"{tmp_path / 'metrics.json'})")
        assert main(argv + ["--out-json", str(a_file / "sub" / "e.json")]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line == f"error: --out-json: {a_file / 'sub' / 'e.json'}: cannot be created, {a_file} is not a folder"
    assert a_file.read_text() == "x"


def test_entry_point_keeps_every_flag():
    assert set(build_parser()._option_string_actions) == EVALUATE_FLAGS
    done = subprocess.run([sys.executable, "-m", "toco_fast.evaluate", "--help"], capture_output=True, text=True,
                          check=True)
    for flag in EVALUATE_FLAGS - {"-h"}:
        assert flag in done.stdout, flag
