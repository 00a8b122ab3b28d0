"""``python -m toco_fast.infer`` (``toco_fast.cli.infer``): predictions the evaluator scores identically, the
protocol choice, ``--crf`` failing before any work, bad devices, and the flags of the entry point."""
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
               "--precision", "--workers", "--max-images"}


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


def test_entry_point_keeps_every_flag():
    assert set(build_parser()._option_string_actions) == INFER_FLAGS
    done = subprocess.run([sys.executable, "-m", "toco_fast.infer", "--help"], capture_output=True, text=True,
                          check=True)
    for flag in INFER_FLAGS - {"-h"}:
        assert flag in done.stdout, flag
