"""``check_dataset``: a clean split reports nothing, a damaged one reports every bad file at once."""

import numpy as np
import pytest
from PIL import Image

from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.files import save_cls_labels
from toco_fast.data.tools.check import check_dataset
from layout_paths import images_path, lists_path, masks_path, small_source

def test_clean_set_has_no_problems(root):
    assert check_dataset(EvalDataset(small_source(root, "val"))) == []
    assert check_dataset(TrainDataset(small_source(root)), num_threads=1) == []


def test_check_dataset_reports_every_bad_file(root):
    source = small_source(root)
    with open(images_path(root, "train_000000"), "wb") as handle:
        handle.write(b"garbage")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks_path(root, "train_000002"))
    Image.fromarray(np.full((32, 32), 9, np.uint8)).save(masks_path(root, "train_000004"))
    labels = {n: v for n, v in source.labels().items()}
    flipped = labels["train_000005"].copy()
    flipped[:] = 1 - flipped
    labels["train_000005"] = flipped
    save_cls_labels(lists_path(root, "cls_labels_onehot.npy"), labels)
    problems = check_dataset(TrainDataset(small_source(root)))
    assert len(problems) == 4, problems
    assert "train_000000.png: cannot read image" in problems[0]
    assert problems[1].startswith(masks_path(root, "train_000002") + ": mask size 8x8")
    assert problems[2].startswith(masks_path(root, "train_000004") + ": class ids 9")
    assert "label of 'train_000005'" in problems[3] and "differs from the classes in" in problems[3]


def test_check_dataset_rejects_other_objects():
    with pytest.raises(ValueError, match="dataset"):
        check_dataset([1, 2, 3])


def test_check_dataset_reports_a_16_bit_image(root):
    """--check-data used to pass a 16-bit PNG that decodes as all white."""
    path = images_path(root, "train_000001")
    height, width = np.asarray(Image.open(path)).shape[:2]
    Image.fromarray(np.full((height, width), 40000, np.uint16)).save(path)
    problems = check_dataset(TrainDataset(small_source(root)), num_threads=1)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: image mode I;16"), problems
