"""What the evaluation tests share: a literal port of the official ``utils/evaluate.py`` scores (the reference the
metrics must match), a tiny VOC-layout split with prediction PNGs, and a tiny checkpoint with its synthetic split."""
import numpy as np
import pytest
from PIL import Image


def _official_fast_hist(label_true, label_pred, num_classes):
    mask = (label_true >= 0) & (label_true < num_classes)
    hist = np.bincount(num_classes * label_true[mask].astype(int) + label_pred[mask],
                       minlength=num_classes ** 2)
    return hist.reshape(num_classes, num_classes)


def _official_scores(label_trues, label_preds, num_classes=21):
    hist = np.zeros((num_classes, num_classes))
    for lt, lp in zip(label_trues, label_preds):
        hist += _official_fast_hist(lt.flatten(), lp.flatten(), num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(axis=1))
        iu = np.diag(hist) / (hist.sum(axis=1) + hist.sum(axis=0) - np.diag(hist))
    valid = hist.sum(axis=1) > 0
    mean_iu = np.nanmean(iu[valid])
    return {"pAcc": acc, "mAcc": acc_cls, "miou": mean_iu, "iou": dict(zip(range(num_classes), iu))}


@pytest.fixture
def official_scores():
    """``official_scores(label_trues, label_preds, num_classes=21)``: the official ``scores``, ported literally."""
    return _official_scores


def _write_png(path, array, mode="L"):
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode if mode != "L" else None).save(path)


@pytest.fixture
def voc_like(tmp_path):
    """A 3-image VOC-layout split (21 VOC classes) with masks and matching prediction PNGs:
    ``(root, pred_dir, names, masks, preds)``."""
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
