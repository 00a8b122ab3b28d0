"""``check_dataset``: a clean split reports nothing, a damaged one reports every bad file at once."""
import os

import numpy as np
import pytest
from PIL import Image

from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.files import save_cls_labels
from toco_fast.data.layouts.synthetic import synthetic_class_names
from toco_fast.data.layouts.voc import VOCSource
from toco_fast.data.tools.check import check_dataset

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


def test_clean_set_has_no_problems(root):
    assert check_dataset(EvalDataset(_source(root, "val"))) == []
    assert check_dataset(TrainDataset(_source(root)), num_threads=1) == []


def test_check_dataset_reports_every_bad_file(root):
    source = _source(root)
    with open(_img(root, "train_000000"), "wb") as handle:
        handle.write(b"garbage")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(_mask(root, "train_000002"))
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(_mask(root, "train_000004"))
    labels = {n: v for n, v in source.labels().items()}
    flipped = labels["train_000005"].copy()
    flipped[:] = 1 - flipped
    labels["train_000005"] = flipped
    save_cls_labels(_lists(root, "cls_labels_onehot.npy"), labels)
    problems = check_dataset(TrainDataset(_source(root)))
    assert len(problems) == 4, problems
    assert "train_000000.png: cannot read image" in problems[0]
    assert problems[1].startswith(_mask(root, "train_000002") + ": mask size 8x8")
    assert problems[2].startswith(_mask(root, "train_000004") + ": class ids 9")
    assert "label of 'train_000005'" in problems[3] and "differs from the classes in" in problems[3]


def test_check_dataset_rejects_other_objects():
    with pytest.raises(ValueError, match="dataset"):
        check_dataset([1, 2, 3])
