"""``python -m toco_fast.demo --compare`` end to end at test size, with its pictures (or a note without
matplotlib)."""
import csv
import importlib.util
import json

from toco_fast.cli import demo

NUM_CLASSES = 4
SIZE = 64


def test_demo_compare_prints_both_tables(tmp_path, capsys):
    overrides = []
    for item in ("model.backbone={embed_dim: 32, depth: 3, num_heads: 2, patch_size: 16, img_size: 64}",
                 f"model.num_classes={NUM_CLASSES}", "model.proj_dim=64", "model.decoder_channels=32",
                 "model.proj_hidden_dim=64", "model.proj_bottleneck_dim=32", "data.synthetic.num_train=8",
                 "data.synthetic.num_val=2", f"data.synthetic.size={SIZE}", "data.crop_size=64",
                 "data.local_crop_size=32", "data.num_local_crops=2", "data.batch_size=2", "cam.scales=[1.0]",
                 "eval.crop_size=64", "optim.warmup_iters=1", "loss.seg_start_iter=0", "train.max_iters=2",
                 "train.log_iters=1", "train.ckpt_iters=2"):
        overrides += ["--set", item]
    data_dir, out = tmp_path / "data", tmp_path / "out"
    assert demo.main(["--compare", "--data-dir", str(data_dir), "--out", str(out), *overrides]) == 0
    text = capsys.readouterr().out
    assert "[demo] ToCo:" in text and "[demo] cls-only baseline" in text
    assert text.count("| mIoU") == 2 and "Seg_Pred" in text and "| toco |" in text and "| baseline |" in text
    toco = json.loads((out / "toco" / "results.json").read_text())
    base = json.loads((out / "baseline" / "results.json").read_text())
    assert set(toco["miou"]) == {"CAM", "aux_CAM", "Seg_Pred"}
    assert (toco["loss_weights"]["ptc"], base["loss_weights"]["ptc"], base["loss_weights"]["ctc"]) == (0.2, 0, 0)
    assert len(toco["iou"]["CAM"]) == NUM_CLASSES
    if importlib.util.find_spec("matplotlib") is not None:
        for name in ("oversmoothing.png", "oversmoothing.csv", "cam_grid.png"):
            assert (out / name).is_file() and str(out / name) in text, name
        rows = list(csv.reader(open(out / "oversmoothing.csv")))
        assert rows[0] == ["block", "ToCo", "cls-only baseline"] and len(rows) == 1 + 3


def test_demo_pictures_without_matplotlib_are_a_note(tmp_path, capsys, monkeypatch):
    from toco_fast._extras import MissingExtraError
    from toco_fast.diagnose import plots

    def missing():
        raise MissingExtraError("drawing the diagnostic pictures needs matplotlib: pip install 'toco_fast[plots]'")

    monkeypatch.setattr(plots, "require_matplotlib", missing)
    assert demo.save_pictures(str(tmp_path), ["toco"]) == []
    assert "[demo] no pictures: drawing the diagnostic pictures needs matplotlib" in capsys.readouterr().out
