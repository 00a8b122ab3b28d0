"""Confusion-matrix metrics (vs hand-computed IoUs and a literal port of the official scores), the IoU table,
the evaluate CLI on PNG prediction folders, and evaluate_model on a tiny model."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from toco_fast.metrics import SegmentationMetric, distributed_sum, format_iou_table


# ---- a literal port of the official utils/evaluate.py (_fast_hist / scores) -------------------------------------

def official_fast_hist(label_true, label_pred, num_classes):
    mask = (label_true >= 0) & (label_true < num_classes)
    hist = np.bincount(num_classes * label_true[mask].astype(int) + label_pred[mask],
                       minlength=num_classes ** 2)
    return hist.reshape(num_classes, num_classes)


def official_scores(label_trues, label_preds, num_classes=21):
    hist = np.zeros((num_classes, num_classes))
    for lt, lp in zip(label_trues, label_preds):
        hist += official_fast_hist(lt.flatten(), lp.flatten(), num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(axis=1))
        iu = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
    valid = hist.sum(axis=1) > 0
    mean_iu = np.nanmean(iu[valid])
    return {"pAcc": acc, "mAcc": acc_cls, "miou": mean_iu, "iou": dict(zip(range(num_classes), iu))}


# ---- hand-made case ---------------------------------------------------------------------------------------------
# C = 5. Counted (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,3); two gt-255 pixels are skipped.
# IoU: class 0 = 1/(3+2-1), class 1 = 2/(2+3-2), class 2 = 1/(2+1-1), class 3 (predicted, not in gt) = 0,
# class 4 (nowhere) = NaN. mIoU (classes in gt) = (1/4 + 2/3 + 1/2) / 3.
HAND_GT = np.array([[0, 0, 1, 1, 2], [2, 255, 255, 0, 255]])
HAND_PRED = np.array([[0, 1, 1, 1, 2], [0, 3, 4, 3, 4]])
HAND_IOU = [1 / 4, 2 / 3, 1 / 2, 0.0, math.nan]
HAND_MIOU = (1 / 4 + 2 / 3 + 1 / 2) / 3


def _hand_metric() -> SegmentationMetric:
    metric = SegmentationMetric(5, class_names=["bg", "cat", "dog", "car", "bus"])
    metric.update(HAND_PRED, HAND_GT)
    return metric


def test_hand_made_ious_with_ignore_absent_and_predicted_only_classes():
    metric = _hand_metric()
    np.testing.assert_allclose(metric.iou(), HAND_IOU, rtol=0, atol=1e-12, equal_nan=True)
    assert metric.miou() == pytest.approx(HAND_MIOU, abs=1e-12)
    assert metric.pixel_accuracy() == pytest.approx(4 / 7)
    assert metric.mean_accuracy() == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert metric.num_pixels == 7
    assert metric.present().tolist() == [True, True, True, False, False]
    summary = metric.to_dict()
    assert summary["iou"]["bus"] is None and summary["iou"]["car"] == 0.0
    json.dumps(summary)  # NaN-free


def test_torch_numpy_batched_and_device_inputs_agree():
    reference = _hand_metric().hist
    as_torch = SegmentationMetric(5)
    as_torch.update(torch.from_numpy(HAND_PRED).to(torch.uint8), torch.from_numpy(HAND_GT).to(torch.uint8))
    batched = SegmentationMetric(5)
    batched.update(torch.from_numpy(np.stack([HAND_PRED, HAND_PRED])), torch.from_numpy(np.stack([HAND_GT, HAND_GT])))
    assert torch.equal(as_torch.hist, reference)
    assert torch.equal(batched.hist, 2 * reference)


@pytest.mark.parametrize("num_classes", [1, 4, 21])
def test_matches_official_scores_on_random_labels(num_classes):
    rng = np.random.default_rng(num_classes)
    gts, preds = [], []
    for _ in range(4):
        shape = tuple(rng.integers(5, 40, size=2))
        gt = rng.integers(0, num_classes, size=shape)
        gt[rng.random(shape) < 0.15] = 255
        gt[rng.random(shape) < 0.02] = num_classes + 7  # out-of-range gt: skipped by both
        gts.append(gt)
        preds.append(rng.integers(0, num_classes, size=shape))
    metric = SegmentationMetric(num_classes)
    for pred, gt in zip(preds, gts):
        metric.update(pred, gt)
    official = official_scores(gts, preds, num_classes)
    np.testing.assert_allclose(metric.iou(), list(official["iou"].values()), rtol=1e-12, equal_nan=True)
    assert metric.miou() == pytest.approx(official["miou"], rel=1e-12)
    assert metric.pixel_accuracy() == pytest.approx(official["pAcc"], rel=1e-12)
    assert metric.mean_accuracy() == pytest.approx(official["mAcc"], rel=1e-12)


def test_merge_and_distributed_sum_equal_one_pass(tmp_path):
    rng = np.random.default_rng(3)
    gts = [rng.integers(0, 6, size=(9, 11)) for _ in range(5)]
    preds = [rng.integers(0, 6, size=(9, 11)) for _ in range(5)]
    whole, first, second = SegmentationMetric(6), SegmentationMetric(6), SegmentationMetric(6)
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        whole.update(pred, gt)
        (first if i < 2 else second).update(pred, gt)
    assert torch.equal(first.merge(second).hist, whole.hist)
    assert first.miou() == whole.miou()

    before = whole.hist.clone()
    distributed_sum([whole])  # not initialised: a no-op
    assert torch.equal(whole.hist, before)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        whole.all_reduce()
        assert torch.equal(whole.hist, before)
    finally:
        dist.destroy_process_group()
    with pytest.raises(ValueError, match="other"):
        whole.merge(SegmentationMetric(7))


def test_bad_inputs_raise():
    metric = SegmentationMetric(3)
    with pytest.raises(ValueError, match=r"pred: class indices must lie in \[0, 3\)"):
        metric.update(np.array([[0, 3]]), np.array([[0, 1]]))
    metric.update(np.array([[0, 9]]), np.array([[0, 255]]))  # out-of-range prediction on an ignored pixel is fine
    with pytest.raises(ValueError, match="pred: shape"):
        metric.update(np.zeros((2, 3), dtype=np.int64), np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="pred: expected an integer"):
        metric.update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="class_names"):
        SegmentationMetric(3, class_names=["a", "b"])
    assert math.isnan(SegmentationMetric(3).miou())


def test_format_iou_table_has_names_numbers_and_miou_row():
    hand = _hand_metric()
    perfect = SegmentationMetric(5)
    perfect.update(HAND_GT.clip(0, 4), HAND_GT.clip(0, 4))
    table = format_iou_table({"CAM": hand, "aux_CAM": hand, "Seg_Pred": perfect})
    lines = table.splitlines()
    assert "CAM" in lines[1] and "aux_CAM" in lines[1] and "Seg_Pred" in lines[1]
    row = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines if "|" in line}
    assert row["bg"] == ["25.000", "25.000", "100.000"]
    assert row["cat"][0] == "66.667" and row["dog"][0] == "50.000" and row["car"][0] == "0.000"
    assert row["bus"][0] == "nan"
    assert row["mIoU"][0] == f"{100 * HAND_MIOU:.3f}" == "47.222"
    custom = format_iou_table({"x": hand}, class_names=list("ABCDE"), digits=1)
    assert "| A " in custom and "25.0" in custom
    with pytest.raises(ValueError, match="class_names"):
        format_iou_table({"x": hand}, class_names=["a"])


# ---- CLI on a folder of PNG predictions -------------------------------------------------------------------------

def _write_png(path, array, mode="L"):
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode if mode != "L" else None).save(path)


@pytest.fixture
def voc_like(tmp_path):
    """A 3-image VOC-layout split (21 VOC classes) with masks and matching prediction PNGs."""
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names, masks, preds = ["a_1", "b_2", "c_3"], [], []
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for i, name in enumerate(names):
        shape = (12 + i, 17 - i)
        mask = rng.choice([0, 1, 5, 15, 255], size=shape).astype(np.uint8)
        pred = rng.choice([0, 1, 5, 7], size=shape).astype(np.uint8)
        _write_png(root / "JPEGImages" / f"{name}.png", rng.integers(0, 255, size=shape + (3,)))
        _write_png(root / "SegmentationClassAug" / f"{name}.png", mask)
        _write_png(pred_dir / f"{name}.png", pred)
        masks.append(mask)
        preds.append(pred)
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(names) + "\n")
    return root, pred_dir, names, masks, preds


def test_cli_pred_dir_gives_the_exact_numbers(voc_like, capsys):
    from toco_fast.evaluate import main

    root, pred_dir, names, masks, preds = voc_like
    out_json = pred_dir.parent / "scores.json"
    assert main(["--pred-dir", str(pred_dir), "--dataset", "voc", "--root", str(root), "--split", "val",
                 "--workers", "0", "--out-json", str(out_json)]) == 0
    official = official_scores([m.astype(np.int64) for m in masks], [p.astype(np.int64) for p in preds], 21)
    result = json.loads(out_json.read_text())["results"]["Seg_Pred"]
    assert result["miou"] == pytest.approx(official["miou"], rel=1e-12)
    assert result["pAcc"] == pytest.approx(official["pAcc"], rel=1e-12)
    assert result["iou"]["aeroplane"] == pytest.approx(official["iou"][1], rel=1e-12)
    assert result["iou"]["bird"] is None  # class 3: nowhere
    table = capsys.readouterr().out
    assert "aeroplane" in table and f"{100 * official['miou']:.3f}" in table


def test_cli_pred_dir_reads_official_colour_encoded_pngs(voc_like, tmp_path):
    from toco_fast.data.classes import voc_palette
    from toco_fast.evaluate import evaluate_prediction_dir, read_label_png
    from toco_fast.data.voc import VOCSource

    root, pred_dir, names, masks, preds = voc_like
    rgb_dir = tmp_path / "rgb"
    rgb_dir.mkdir()
    for name, pred in zip(names, preds):
        Image.fromarray(voc_palette()[pred]).save(rgb_dir / f"{name}.png")
        np.testing.assert_array_equal(read_label_png(str(rgb_dir / f"{name}.png")), pred)
    source = VOCSource(str(root), "val")
    assert torch.equal(evaluate_prediction_dir(str(rgb_dir), source).hist,
                       evaluate_prediction_dir(str(pred_dir), source).hist)
    Image.fromarray(np.full((2, 2, 3), 7, dtype=np.uint8)).save(rgb_dir / "odd.png")
    with pytest.raises(ValueError, match="odd.png.*not in the VOC colour map"):
        read_label_png(str(rgb_dir / "odd.png"))


def test_cli_missing_prediction_and_size_mismatch_name_the_file(voc_like, capsys):
    from toco_fast.evaluate import main

    root, pred_dir, names, masks, preds = voc_like
    argv = ["--pred-dir", str(pred_dir), "--dataset", "voc", "--root", str(root), "--workers", "0"]
    os.remove(pred_dir / "b_2.png")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(pred_dir / "b_2.png") in err and "not found" in err

    _write_png(pred_dir / "b_2.png", np.zeros((5, 6)))
    assert main(argv) == 2
    err = capsys.readouterr().err
    h, w = masks[1].shape
    assert str(pred_dir / "b_2.png") in err and "6x5" in err and f"{w}x{h}" in err


# ---- evaluate_model on a tiny model -----------------------------------------------------------------------------

def _tiny_toco(num_classes=4):
    from toco_fast.model import ToCo

    torch.manual_seed(0)
    return ToCo(backbone=dict(embed_dim=32, depth=3, num_heads=2, patch_size=16, img_size=32),
                num_classes=num_classes, proj_dim=16)


def test_evaluate_model_returns_three_metrics_and_restores_mode():
    from toco_fast.cam.labels import cam_to_label
    from toco_fast.cam.multiscale import multi_scale_cam
    from toco_fast.evaluate import evaluate_model

    model = _tiny_toco()
    gen = torch.Generator().manual_seed(1)
    items = []
    for i, (h, w) in enumerate([(20, 27), (33, 18), (24, 24)]):
        mask = torch.randint(0, 4, (h, w), generator=gen)
        mask[:2] = 255
        cls_label = torch.zeros(3)
        cls_label[i % 3] = 1
        items.append({"name": [f"im{i}"], "image": torch.randn(1, 3, h, w, generator=gen), "mask": mask[None],
                      "cls_label": cls_label[None]})
    model.train()
    results = evaluate_model(model, items, num_classes=4, class_names=["bg", "a", "b", "c"], crop_size=32,
                             cam_scales=(1.0, 0.5))
    assert model.training
    assert list(results) == ["CAM", "aux_CAM", "Seg_Pred"]
    assert all(r.num_pixels == sum(int((it["mask"] != 255).sum()) for it in items) for r in results.values())

    model.eval()
    expected = {k: SegmentationMetric(4) for k in results}
    with torch.no_grad():
        for it in items:
            x = F.interpolate(it["image"], size=(32, 32), mode="bilinear", align_corners=False)
            hw = it["mask"].shape[-2:]
            seg = F.interpolate(model(x).seg_logits, size=hw, mode="bilinear", align_corners=False)
            expected["Seg_Pred"].update(seg.argmax(1), it["mask"])
            for key, cam in zip(("CAM", "aux_CAM"), multi_scale_cam(model, x, (1.0, 0.5))):
                cam = F.interpolate(cam, size=hw, mode="bilinear", align_corners=False)
                expected[key].update(cam_to_label(cam, it["cls_label"], bkg_thre=0.5), it["mask"])
    for key in results:
        assert torch.equal(results[key].hist, expected[key].hist), key

    subset = evaluate_model(model, items, num_classes=4, crop_size=32, cam_scales=(1.0,), max_images=2)
    assert not model.training
    assert subset["Seg_Pred"].num_pixels == sum(int((it["mask"] != 255).sum()) for it in items[:2])
