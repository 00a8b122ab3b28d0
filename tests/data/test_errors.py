"""Bad input: every case raises DataError (a ValueError) whose message starts with the offending file."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.errors import DataError
from toco_fast.data.files import save_cls_labels
from toco_fast.data.layouts.voc import VOCSource
from toco_fast.data.tools.check import check_dataset
from toco_fast.data.views import ToCoViews
from layout_paths import NUM_CLASSES, images_path, lists_path, masks_path, small_source

def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_root(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=re.escape(f"{missing}: voc dataset root folder not found")):
        VOCSource(missing, "train")


def test_missing_list_file(root):
    with pytest.raises(DataError, match=r"train_aug.txt: split list not found"):
        small_source(root, "train_aug")


def test_empty_list_file(root):
    open(lists_path(root, "empty.txt"), "w").close()
    with pytest.raises(DataError, match=r"empty.txt: split list is empty"):
        small_source(root, "empty")


def test_list_entry_without_image(root):
    os.remove(images_path(root, "train_000003"))
    with pytest.raises(DataError, match=r"train.txt: 1 listed image\(s\) not found, e.g. .*train_000003"):
        small_source(root)


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_image(root, content):
    source = small_source(root)
    with open(images_path(root, "train_000001"), "wb") as handle:
        handle.write(content)
    with pytest.raises(DataError, match=r"train_000001.png: cannot read image"):
        TrainDataset(source, ToCoViews(crop_size=16))[1]
    problems = check_dataset(source)
    assert len(problems) == 1 and "train_000001.png: cannot read image" in problems[0]


def test_truncated_image(root):
    path = images_path(root, "train_000002")
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"train_000002.png: cannot read image"):
        small_source(root).read_image(2)


def test_mask_of_wrong_size(root):
    Image.fromarray(np.zeros((31, 32), np.uint8)).save(masks_path(root, "val_000000"))
    with pytest.raises(DataError, match=r"val_000000.png: mask size 32x31 \(WxH\) differs from the image's 32x32"):
        EvalDataset(small_source(root, "val"))[0]


def test_mask_with_class_id_out_of_range(root):
    mask = np.zeros((32, 32), np.uint8)
    mask[0, 0], mask[1, 1], mask[2, 2] = NUM_CLASSES, 7, 255
    Image.fromarray(mask).save(masks_path(root, "val_000001"))
    with pytest.raises(DataError, match=r"val_000001.png: class ids 4, 7 are >= num_classes=4"):
        EvalDataset(small_source(root, "val"))[1]


def test_colour_mask_rejected(root):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(masks_path(root, "val_000001"))
    with pytest.raises(DataError, match=r"val_000001.png: mask must be a single-channel .* got mode RGB"):
        EvalDataset(small_source(root, "val"))[1]


def test_missing_mask_for_evaluation(root):
    os.remove(masks_path(root, "val_000001"))
    with pytest.raises(DataError, match=r"val_000001.png: mask file not found"):
        EvalDataset(small_source(root, "val"))
    problems = check_dataset(small_source(root, "val"), require_masks=True)
    assert problems == [f"{masks_path(root, 'val_000001')}: mask file not found"]
    assert check_dataset(small_source(root, "val")) == []  # a training split does not need masks


def test_missing_label_cache(root):
    os.remove(lists_path(root, "cls_labels_onehot.npy"))
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: image-level label cache not found"):
        TrainDataset(small_source(root))


def test_label_cache_with_wrong_length(root):
    save_cls_labels(lists_path(root, "cls_labels_onehot.npy"), {"train_000000": np.ones(NUM_CLASSES, np.uint8)})
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: entry 'train_000000' has shape \(4,\), "
                                        r"expected \(3,\)"):
        TrainDataset(small_source(root))


def test_label_cache_not_a_dict(root):
    np.save(lists_path(root, "cls_labels_onehot.npy"), np.zeros(3))
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: expected a pickled dict"):
        TrainDataset(small_source(root))


def test_name_missing_from_label_cache(root):
    save_cls_labels(lists_path(root, "cls_labels_onehot.npy"), {"train_000000": np.ones(NUM_CLASSES - 1, np.uint8)})
    with pytest.raises(DataError, match=r"cls_labels_onehot.npy: 5 image\(s\) of .*train.txt have no "
                                        r"image-level label, e.g. train_000001"):
        TrainDataset(small_source(root))
