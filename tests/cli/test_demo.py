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
    assert "pseudo-label mIoU (train)" in text and text.count("[demo] pseudo labels of the train split") == 2
    toco = json.loads((out / "toco" / "results.json").read_text())
    base = json.loads((out / "baseline" / "results.json").read_text())
    assert set(toco["miou"]) == {"CAM", "aux_CAM", "Seg_Pred"}
    assert (toco["loss_weights"]["ptc"], base["loss_weights"]["ptc"], base["loss_weights"]["ctc"]) == (0.2, 0, 0)
    assert len(toco["iou"]["CAM"]) == NUM_CLASSES
    for run, summary in (("toco", toco), ("baseline", base)):
        _check_pseudo_labels(out / run, data_dir, summary["pseudo_label"])
    if importlib.util.find_spec("matplotlib") is not None:
        for name in ("oversmoothing.png", "oversmoothing.csv", "cam_grid.png"):
            assert (out / name).is_file() and str(out / name) in text, name
        rows = list(csv.reader(open(out / "oversmoothing.csv")))
        assert rows[0] == ["block", "ToCo", "cls-only baseline"] and len(rows) == 1 + 3


def _check_pseudo_labels(run_dir, data_dir, reported):
    """The reported pseudo-label mIoU and coverage equal an independent count over the written PNGs (the official
    ``pseudo_scores``: uncertain pixels, 255, count in neither the prediction nor the ground truth)."""
    import numpy as np
    from PIL import Image

    from toco_fast.data import open_source
    from toco_fast.eval.metrics import SegmentationMetric

    assert reported["folder"] == str(run_dir / "pseudo_labels")
    source = open_source("synthetic", str(data_dir), "train")
    metric = SegmentationMetric(NUM_CLASSES)
    labelled = total = 0
    for index, name in enumerate(source.names):
        label = np.asarray(Image.open(run_dir / "pseudo_labels" / "pseudo" / f"{name}.png")).astype(np.int64)
        uncertain = label == 255
        gt = source.read_mask(index).astype(np.int64)
        metric.update(np.where(uncertain, 0, label), np.where(uncertain, 255, gt))
        labelled, total = labelled + int((~uncertain).sum()), total + label.size
    assert total > 0 and reported["miou"] == round(100 * metric.miou(), 2)
    assert reported["coverage"] == round(100 * labelled / total, 2)


def test_demo_pictures_without_matplotlib_are_a_note(tmp_path, capsys, monkeypatch):
    from toco_fast._extras import MissingExtraError
    from toco_fast.diagnose import plots

    def missing():
        raise MissingExtraError("drawing the diagnostic pictures needs matplotlib: pip install 'toco_fast[plots]'")

    monkeypatch.setattr(plots, "require_matplotlib", missing)
    assert demo.save_pictures(str(tmp_path), ["toco"]) == []
    assert "[demo] no pictures: drawing the diagnostic pictures needs matplotlib" in capsys.readouterr().out
