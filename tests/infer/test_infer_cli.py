"""``python -m toco_fast.infer`` (``toco_fast.cli.infer``): predictions the evaluator scores identically, the
protocol choice, ``--crf`` failing before any work, bad devices, a class-count mismatch and a bad ``--out`` failing
before any image, unreadable images (stop in one line, or ``--skip-bad``, also sharded under torchrun), and the
flags of the entry point."""
import argparse
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.cli.evaluate import main as evaluate_main
from toco_fast.cli.infer import build_parser, main, protocol_from_args
from toco_fast.infer import PROTOCOLS, load_logits

INFER_FLAGS = {"-h", "--help", "--checkpoint", "--dataset", "--root", "--split", "--lists-dir", "--image-root",
               "--mask-root", "--ignore-index", "--out", "--protocol", "--scales", "--crf", "--save-logits", "--device",
               "--precision", "--workers", "--max-images", "--skip-bad", "--mode", "--images", "--image-list",
               "--overwrite", "--classes", "--cam-scales", "--cam-size", "--bkg-thre", "--heatmaps", "--cam-source",
               "--high-thre", "--low-thre", "--crf-workers", "--batch-size"}


def _one_error_line(err: str) -> str:
    """The single ``error: ...`` line of ``err`` (fails when there are several lines or a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _corrupt_image(data_root, name: str) -> str:
    """Overwrite image ``name`` of the synthetic val split with bytes no decoder reads; returns its path."""
    path = str(data_root / "JPEGImages" / f"{name}.png")
    with open(path, "wb") as handle:
        handle.write(b"not an image")
    return path


def _counted_pixels(data_root, indices) -> int:
    """Non-ignored mask pixels of the given val images (what Seg_Pred.num_pixels counts)."""
    from toco_fast.data import open_source

    source = open_source("synthetic", str(data_root), "val")
    return sum(int((source.read_mask(i) != 255).sum()) for i in indices)


def test_cli_writes_predictions_that_the_evaluator_scores_identically(tmp_path, capsys, tiny_run):
    run_dir, data_root = tiny_run
    out = tmp_path / "out"
    assert main(["--checkpoint", str(run_dir), "--out", str(out), "--workers", "0", "--save-logits",
                 "--scales", "1.0", "0.75"]) == 0
    names = sorted(os.listdir(out / "seg"))
    assert names == ["val_000000.png", "val_000001.png", "val_000002.png"]
    assert sorted(os.listdir(out / "logits")) == [n.replace(".png", ".npz") for n in names]
    inferred = json.loads((out / "metrics.json").read_text())
    assert inferred["protocol"]["name"] == "voc" and inferred["protocol"]["scales"] == [1.0, 0.75]
    logits = load_logits(str(out / "logits" / "val_000001.npz"))
    with Image.open(out / "seg" / "val_000001.png") as img:
        np.testing.assert_array_equal(np.asarray(img), logits[0].argmax(0).numpy())

    assert evaluate_main(["--pred-dir", str(out / "seg"), "--dataset", "synthetic", "--root", str(data_root),
                          "--split", "val", "--workers", "0", "--out-json", str(tmp_path / "e.json")]) == 0
    scored = json.loads((tmp_path / "e.json").read_text())["results"]["Seg_Pred"]
    assert scored["miou"] == pytest.approx(inferred["results"]["Seg_Pred"]["miou"], rel=1e-12)
    capsys.readouterr()


def test_protocol_follows_the_dataset_unless_named():
    def args(protocol=None, scales=None):
        return argparse.Namespace(protocol=protocol, scales=scales)

    assert protocol_from_args(args(), "coco") == ("coco", PROTOCOLS["coco"])
    assert protocol_from_args(args(), "voc") == ("voc", PROTOCOLS["voc"])
    assert protocol_from_args(args(), "synthetic") == ("voc", PROTOCOLS["voc"])
    name, protocol = protocol_from_args(args("coco", [1.0, 2.0]), "voc")
    assert name == "coco" and protocol.scales == (1.0, 2.0)
    assert (protocol.flip_mode, protocol.scale_mode, protocol.base_size) == ("max", "sum", 448)


def test_crf_missing_extension_fails_before_any_work(monkeypatch, tmp_path, capsys):
    def not_built(*args, **kwargs):
        raise RuntimeError("dense_crf: the toco_fast._C extension is not available; build it with pip install -e .")

    fake = types.ModuleType("toco_fast.ops.lattice")
    fake.dense_crf = not_built
    monkeypatch.setitem(sys.modules, "toco_fast.ops.lattice", fake)
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--crf",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--crf" in err and "build it" in err
    assert not (tmp_path / "out").exists()


def test_bad_device_and_missing_checkpoint_are_input_errors(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                 "--device", "tpu:x"]) == 2
    assert "--device: expected auto, cpu, cuda or cuda:N, got 'tpu:x'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                     "--device", "cuda"]) == 2
        assert "--device: 'cuda' requested but CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_class_count_mismatch_fails_before_any_image(tmp_path, capsys, tiny_run):
    from toco_fast.data import generate_synthetic
    from toco_fast.io.checkpoint import resolve_checkpoint

    run_dir, _ = tiny_run
    six = tmp_path / "six"
    generate_synthetic(str(six), num_train=1, num_val=2, num_classes=6, size=40)
    out = tmp_path / "out"
    assert main(["--checkpoint", str(run_dir), "--dataset", "synthetic", "--root", str(six), "--split", "val",
                 "--out", str(out), "--workers", "0", "--device", "cpu"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(resolve_checkpoint(run_dir)) in line and str(six) in line and "'val'" in line
    assert "predicts 4 classes" in line and "has 6 classes" in line
    assert not (out / "seg").exists() and not (out / "metrics.json").exists()


def test_out_that_is_a_file_or_cannot_be_created_fails_before_the_model_is_built(tmp_path, capsys, tiny_run,
                                                                                 monkeypatch):
    from toco_fast.model import factory

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(factory, "model_from_checkpoint", no_model)
    run_dir, _ = tiny_run
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, problem in [(a_file, "exists and is not a folder (expected an output folder)"),
                         (a_file / "sub", f"cannot be created, {a_file} is not a folder")]:
        assert main(["--checkpoint", str(run_dir), "--out", str(out), "--workers", "0", "--device", "cpu"]) == 2
        assert _one_error_line(capsys.readouterr().err) == f"error: --out: {out}: {problem}"


def test_out_is_created_up_front_and_must_be_writable(tmp_path, capsys, tiny_run, monkeypatch):
    from toco_fast.model import factory

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    run_dir, _ = tiny_run
    out = tmp_path / "new" / "out"
    built = []
    monkeypatch.setattr(factory, "model_from_checkpoint", lambda *a, **k: built.append(out.is_dir()) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["--checkpoint", str(run_dir), "--out", str(out), "--workers", "0", "--device", "cpu"])
    assert built == [True]  # the folder existed when the model was built

    from toco_fast.io import paths

    monkeypatch.setattr(paths.tempfile, "TemporaryFile", read_only)
    assert main(["--checkpoint", str(run_dir), "--out", str(out), "--workers", "0", "--device", "cpu"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == f"error: --out: {out}: {out} is not writable (Permission denied)"


def test_unreadable_image_stops_in_one_line_naming_the_file(tmp_path, capsys, tiny_run):
    run_dir, data_root = tiny_run
    bad = _corrupt_image(data_root, "val_000001")
    # One worker process: the DataError must not come back as a "Caught DataError in DataLoader worker" traceback.
    assert main(["--checkpoint", str(run_dir), "--out", str(tmp_path / "out"), "--workers", "1",
                 "--device", "cpu"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {bad}: cannot read image") and "worker" not in line
    assert not (tmp_path / "out" / "skipped.txt").exists()


def test_skip_bad_lists_the_unreadable_images_and_scores_the_others(tmp_path, capsys, tiny_run):
    run_dir, data_root = tiny_run
    bad = _corrupt_image(data_root, "val_000001")
    out = tmp_path / "out"
    assert main(["--checkpoint", str(run_dir), "--out", str(out), "--workers", "1", "--device", "cpu",
                 "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert sorted(os.listdir(out / "seg")) == ["val_000000.png", "val_000002.png"]
    (line,) = (out / "skipped.txt").read_text().splitlines()
    name, reason = line.split("\t")
    assert name == "val_000001" and reason.startswith(f"{bad}: cannot read image")
    assert f"skipped 1 unreadable image(s), listed in {out / 'skipped.txt'}:" in captured.err
    assert f"  val_000001: {bad}: cannot read image" in captured.err
    assert "wrote predictions for 2 images" in captured.out and "1 unreadable skipped" in captured.out
    report = json.loads((out / "metrics.json").read_text())
    assert report["skipped"] == 1
    assert report["results"]["Seg_Pred"]["num_pixels"] == _counted_pixels(data_root, [0, 2])

    # A clean run rewrites the list (empty), so a stale one never survives.
    assert main(["--checkpoint", str(run_dir), "--out", str(out), "--workers", "0", "--device", "cpu",
                 "--skip-bad", "--max-images", "1"]) == 0
    assert (out / "skipped.txt").read_text() == ""
    assert "skipped" not in capsys.readouterr().err


def test_sharded_skip_bad_writes_one_list_per_rank_and_sums_the_scores(tmp_path, tiny_run):
    run_dir, data_root = tiny_run
    bad = _corrupt_image(data_root, "val_000000")  # rank 0 of 2 keeps val_000002, rank 1 has val_000001
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "toco_fast.infer", "--checkpoint", str(run_dir), "--out", str(out), "--workers", "0",
                           "--device", "cpu", "--skip-bad"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not (out / "skipped.txt").exists()
    assert (out / "skipped_rank0.txt").read_text().startswith(f"val_000000\t{bad}: cannot read image")
    assert (out / "skipped_rank1.txt").read_text() == ""
    assert sorted(os.listdir(out / "seg")) == ["val_000001.png", "val_000002.png"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["skipped"] == 1
    assert report["results"]["Seg_Pred"]["num_pixels"] == _counted_pixels(data_root, [1, 2])
    assert "2 process(es), 1 unreadable skipped" in done.stdout


def test_sharded_errors_are_printed_by_rank_0_unless_only_this_rank_saw_them(tmp_path, capsys, tiny_run,
                                                                              monkeypatch):
    import contextlib

    from toco_fast.cli import infer
    from toco_fast.data import generate_synthetic
    from toco_fast.parallel.process_group import DistInfo

    # This process plays rank 1 of 2 (no process group: the collectives are no-ops): it reads image 1 only.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(infer, "sharded_run", lambda device: contextlib.nullcontext(DistInfo(rank=1, world_size=2)))
    run_dir, data_root = tiny_run
    six = tmp_path / "six"
    generate_synthetic(str(six), num_train=1, num_val=2, num_classes=6, size=40)
    base = ["--checkpoint", str(run_dir), "--out", str(tmp_path / "out"), "--workers", "0"]
    assert main(base + ["--device", "tpu:x"]) == 2
    assert main(base + ["--device", "cpu", "--dataset", "synthetic", "--root", str(six)]) == 2
    assert capsys.readouterr().err == ""  # every rank saw these: rank 0 reports them
    bad = _corrupt_image(data_root, "val_000001")
    assert main(base + ["--device", "cpu"]) == 2
    assert _one_error_line(capsys.readouterr().err).startswith(f"error: {bad}: cannot read image")


def test_entry_point_keeps_every_flag():
    assert set(build_parser()._option_string_actions) == INFER_FLAGS
    done = subprocess.run([sys.executable, "-m", "toco_fast.infer", "--help"], capture_output=True, text=True,
                          check=True)
    for flag in INFER_FLAGS - {"-h"}:
        assert flag in done.stdout, flag
    assert "skip unreadable images" in " ".join(done.stdout.split())
