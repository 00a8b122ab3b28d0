"""Scoring prediction folders (``toco_fast.eval.predictions``): the PNG forms read, the official colour-encoded
predictions, sharding by rank, and the errors that name the file."""
import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.data import open_source, voc_palette
from toco_fast.eval.metrics import SegmentationMetric
from toco_fast.eval.predictions import evaluate_prediction_dir, read_label_png


def test_official_colour_encoded_pngs_score_like_index_pngs(voc_like, tmp_path):
    root, pred_dir, names, masks, preds = voc_like
    rgb_dir = tmp_path / "rgb"
    rgb_dir.mkdir()
    for name, pred in zip(names, preds):
        Image.fromarray(voc_palette()[pred]).save(rgb_dir / f"{name}.png")
        np.testing.assert_array_equal(read_label_png(str(rgb_dir / f"{name}.png")), pred)
    source = open_source("voc", str(root), "val")
    assert torch.equal(evaluate_prediction_dir(str(rgb_dir), source).hist,
                       evaluate_prediction_dir(str(pred_dir), source).hist)
    Image.fromarray(np.full((2, 2, 3), 7, dtype=np.uint8)).save(rgb_dir / "odd.png")
    with pytest.raises(ValueError, match="odd.png.*not in the VOC colour map"):
        read_label_png(str(rgb_dir / "odd.png"))


def test_palette_and_16_bit_pngs_hold_indices(tmp_path):
    label = np.arange(30, dtype=np.uint8).reshape(5, 6)
    palette = Image.fromarray(label, mode="P")
    palette.putpalette(voc_palette().reshape(-1).tolist())
    palette.save(tmp_path / "p.png")
    Image.fromarray(label.astype(np.uint16) * 3).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_label_png(str(tmp_path / "p.png")), label)
    np.testing.assert_array_equal(read_label_png(str(tmp_path / "i16.png")), label.astype(np.int64) * 3)
    assert read_label_png(str(tmp_path / "p.png")).dtype == np.int64
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png: cannot read prediction PNG"):
        read_label_png(str(tmp_path / "broken.png"))
    with pytest.raises(FileNotFoundError, match="absent.png: prediction file not found"):
        read_label_png(str(tmp_path / "absent.png"))


def test_rank_shards_add_up_to_the_whole_split(voc_like):
    root, pred_dir, names, masks, preds = voc_like
    source = open_source("voc", str(root), "val")
    whole = evaluate_prediction_dir(str(pred_dir), source)
    expected = SegmentationMetric(21)
    for pred, mask in zip(preds, masks):
        expected.update(pred, mask)
    assert torch.equal(whole.hist, expected.hist)
    shards = [evaluate_prediction_dir(str(pred_dir), source, rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(shards[0].hist + shards[1].hist, whole.hist)
    first_two = evaluate_prediction_dir(str(pred_dir), source, max_images=2)
    expected_two = SegmentationMetric(21)
    for pred, mask in zip(preds[:2], masks[:2]):
        expected_two.update(pred, mask)
    assert torch.equal(first_two.hist, expected_two.hist)


def test_missing_folder_file_and_invalid_class_are_named(voc_like, tmp_path):
    root, pred_dir, names, masks, preds = voc_like
    source = open_source("voc", str(root), "val")
    with pytest.raises(FileNotFoundError, match="nowhere: prediction folder not found"):
        evaluate_prediction_dir(str(tmp_path / "nowhere"), source)
    (pred_dir / "a_1.png").unlink()
    (pred_dir / "c_3.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"a_1.png: prediction file not found \(2 of 3 predictions missing"):
        evaluate_prediction_dir(str(pred_dir), source)
    for name, pred in zip(names, preds):
        Image.fromarray(np.where(pred == 7, 40, pred).astype(np.uint8)).save(pred_dir / f"{name}.png")
    with pytest.raises(ValueError, match=r"a_1.png: pred: class indices must lie in \[0, 21\)"):
        evaluate_prediction_dir(str(pred_dir), source)
