"""Bad input: every case raises DataError (a ValueError) whose message starts with the offending file."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.errors import DataError
from toco_fast.data.files import save_cls_labels
from toco_fast.data.layouts.synthetic import synthetic_class_names
from toco_fast.data.layouts.voc import VOCSource
from toco_fast.data.tools.check import check_dataset
from toco_fast.data.views import ToCoViews

K = 4  # classes of the small_set fixture


@pytest.fixture
def root(small_set):
    return small_set


def _source(root, split="train"):
    return VOCSource(root, split, class_names=synthetic_class_names(K))


def _img(root, name):
    return os.path.join(root, "JPEGImages", f"{name}.png")


def _mask(root, name):
    return os.path.join(root, "SegmentationClassAug", f"{name}.png")


def _lists(root, name=""):
    return os.path.join(root, "ImageSets", "Segmentation", name)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_root(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=re.escape(f"{missing}: voc dataset root folder not found")):
        VOCSource(missing, "train")


def test_missing_list_file(root):
    with pytest.raises(DataError, match=r"train_aug.txt: split list not found"):
        _source(root, "train_aug")


def test_empty_list_file(root):
    open(_lists(root, "empty.txt"), "w").close()
    with pytest.raises(DataError, match=r"empty.txt: split list is empty"):
        _source(root, "empty")


def test_list_entry_without_image(root):
    os.remove(_img(root, "train_000003"))
    with pytest.raises(DataError, match=r"train.txt: 1 listed image\(s\) not found, e.g. .*train_000003"):
        _source(root)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_image(root, content):
    source = _source(root)
    with open(_img(root, "train_000001"), "wb") as handle:
        handle.write(content)
    with pytest.raises(DataError, match=r"train_000001.png: cannot read image"):
        TrainDataset(source, ToCoViews(crop_size=16))[1]
    problems = check_dataset(source)
    assert len(problems) == 1 and "train_000001.png: cannot read image" in problems[0]


def test_truncated_image(root):
    path = _img(root, "train_000002")
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train_000002.png: cannot read image"):
        _source(root).read_image(2)


def test_mask_of_wrong_size(root):
    Image.fromarray(np.zeros((31, 32), np.uint8)).save(_mask(root, "val_000000"))
    with pytest.raises(DataError, match=r"val_000000.png: mask size 32x31 \(WxH\) differs from the image's 32x32"):
        EvalDataset(_source(root, "val"))[0]


def test_mask_with_class_id_out_of_range(root):
    mask = np.zeros((32, 32), np.uint8)
    mask[0, 0], mask[1, 1], mask[2, 2] = K, 7, 255
    Image.fromarray(mask).save(_mask(root, "val_000001"))
    with pytest.raises(DataError, match=r"val_000001.png: class ids 4, 7 are >= num_classes=4"):
        EvalDataset(_source(root, "val"))[1]


def test_colour_mask_rejected(root):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(_mask(root, "val_000001"))
    with pytest.raises(DataError, match=r"val_000001.png: mask must be a single-channel .* got mode RGB"):
        EvalDataset(_source(root, "val"))[1]


def test_missing_mask_for_evaluation(root):
    os.remove(_mask(root, "val_000001"))
    with pytest.raises(DataError, match=r"val_000001.png: mask file not found"):
        EvalDataset(_source(root, "val"))
    problems = check_dataset(_source(root, "val"), require_masks=True)
    assert problems == [f"{_mask(root, 'val_000001')}: mask file not found"]
    assert check_dataset(_source(root, "val")) == []  # a training split does not need masks


def test_missing_label_cache(root):
    os.remove(_lists(root, "cls_labels_onehot.npy"))
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: image-level label cache not found"):
        TrainDataset(_source(root))


def test_label_cache_with_wrong_length(root):
    save_cls_labels(_lists(root, "cls_labels_onehot.npy"), {"train_000000": np.ones(K, np.uint8)})
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: entry 'train_000000' has shape \(4,\), "
                                        r"expected \(3,\)"):
        TrainDataset(_source(root))


def test_label_cache_not_a_dict(root):
    np.save(_lists(root, "cls_labels_onehot.npy"), np.zeros(3))
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: expected a pickled dict"):
        TrainDataset(_source(root))


def test_name_missing_from_label_cache(root):
    save_cls_labels(_lists(root, "cls_labels_onehot.npy"), {"train_000000": np.ones(K - 1, np.uint8)})
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: 5 image\(s\) of .*train.txt have no "
                                        r"image-level label, e.g. train_000001"):
        TrainDataset(_source(root))
