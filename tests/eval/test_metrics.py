"""Confusion-matrix metrics (``toco_fast.eval.metrics``) vs hand-computed IoUs and a literal port of the official
scores (``official_scores``, tests/eval/conftest.py), merging and summing across ranks, and the IoU table."""
import json
import math

import numpy as np
import pytest
import torch

from toco_fast.eval.metrics import SegmentationMetric, distributed_sum, format_iou_table

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
def test_matches_official_scores_on_random_labels(num_classes, official_scores):
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
