"""Torch datasets: training items (keys, epochs, labels) and evaluation items (masks, labels, unlabelled splits)."""
import os
import shutil

import numpy as np
import pytest
import torch

from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.errors import DataError
from toco_fast.data.files import labels_from_mask, read_mask
from toco_fast.data.layouts.factory import open_source
from toco_fast.data.layouts.synthetic import synthetic_class_names
from toco_fast.data.views import ToCoViews

K = 5  # classes of the medium_set fixture


def test_voc_source_reads_generated_set(medium_set):
    names = synthetic_class_names(K)
    source = open_source("voc", medium_set, "train", class_names=names)
    assert len(source) == 8 and source.num_classes == K and source.has_masks
    train = TrainDataset(source, ToCoViews(crop_size=32), seed=1)
    item = train[(0, 2)]
    assert item["name"] == "train_000002"
    assert item["cls_label"].shape == (K - 1,) and item["cls_label"].dtype == torch.float32
    mask = read_mask(os.path.join(medium_set, "SegmentationClassAug", "train_000002.png"))
    np.testing.assert_array_equal(item["cls_label"].numpy(), labels_from_mask(mask, K))
    assert torch.equal(train[2]["image"], item["image"])  # bare index = dataset.epoch (0)
    train.set_epoch(1)
    assert not torch.equal(train[2]["image"], item["image"])
    val = EvalDataset(open_source("synthetic", medium_set, "val"))
    sample = val[1]
    assert sample["image"].shape == (3, 40, 40) and sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["mask"].numpy(),
                                  read_mask(os.path.join(medium_set, "SegmentationClassAug", "val_000001.png")))
    with pytest.raises(IndexError):
        val[3]


def test_eval_without_mask_or_label_for_inference(medium_set, tmp_path):
    """An unlabelled split (like VOC test): all-ignore mask, zero label, no error."""
    root = str(tmp_path / "voc")
    shutil.copytree(medium_set, root)
    with open(os.path.join(root, "ImageSets", "Segmentation", "test.txt"), "w") as handle:
        handle.write("extra_000000\ntrain_000001\n")
    shutil.copyfile(os.path.join(root, "JPEGImages", "val_000000.png"),
                    os.path.join(root, "JPEGImages", "extra_000000.png"))
    source = open_source("voc", root, "test", class_names=synthetic_class_names(K))
    with pytest.raises(DataError, match="extra_000000.png: mask file not found"):
        EvalDataset(source)
    dataset = EvalDataset(source, require_masks=False)
    sample = dataset[0]
    assert (sample["mask"] == 255).all() and sample["cls_label"].tolist() == [0.0] * (K - 1)
    assert dataset[1]["cls_label"].sum() >= 1  # has a mask: label from it


def test_eval_items_take_image_labels_from_the_label_cache_over_the_mask(small_set):
    """The official validation reads image-level labels from cls_labels_onehot.npy, not from the masks."""
    from toco_fast.data.files import LABEL_CACHE_NAME, load_cls_labels, save_cls_labels

    names = synthetic_class_names(4)
    cache = os.path.join(small_set, "ImageSets", "Segmentation", LABEL_CACHE_NAME)
    table = load_cls_labels(cache, 4)
    from_mask = EvalDataset(open_source("voc", small_set, "val", class_names=names))[0]["cls_label"].numpy()
    flipped = 1 - np.asarray(table["val_000000"])
    save_cls_labels(cache, {**table, "val_000000": flipped})
    item = EvalDataset(open_source("voc", small_set, "val", class_names=names))[0]
    np.testing.assert_array_equal(item["cls_label"].numpy(), flipped.astype(np.float32))
    assert not np.array_equal(item["cls_label"].numpy(), from_mask)
