"""Preparation tools: VOC lists and label cache, COCO mask conversion (with a fake pycocotools API)."""
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.errors import DataError
from toco_fast.data.files import labels_from_mask, load_cls_labels, load_name_list, read_mask
from toco_fast.data.layouts.coco import COCOSource
from toco_fast.data.layouts.factory import open_source
from toco_fast.data.layouts.synthetic import synthetic_class_names
from toco_fast.data.tools import prepare_coco, prepare_voc
from toco_fast.data.views import ToCoViews

K = 5  # classes of the medium_set fixture


def _voc_copy(medium_set, root):
    """A VOC root with the synthetic images and masks, official lists only (no train_aug, no label cache)."""
    for sub in ("JPEGImages", "SegmentationClassAug"):
        shutil.copytree(os.path.join(medium_set, sub), os.path.join(root, sub))
    lists = os.path.join(root, "ImageSets", "Segmentation")
    os.makedirs(lists)
    with open(os.path.join(lists, "train.txt"), "w") as handle:
        handle.write("train_000000\ntrain_000001\n")
    with open(os.path.join(lists, "val.txt"), "w") as handle:
        handle.write("val_000000\nval_000001\nval_000002\n")
    return lists


def test_prepare_voc_writes_lists_and_label_cache(medium_set, tmp_path, capsys):
    root = str(tmp_path / "VOC2012")
    lists = _voc_copy(medium_set, root)
    with pytest.raises(DataError, match="cls_labels_onehot.npy"):
        TrainDataset(open_source("voc", root, "train", class_names=synthetic_class_names(K)))
    written = prepare_voc.prepare_voc(root, num_classes=K)
    assert set(written) == {"train_aug.txt", "cls_labels_onehot.npy"}
    assert load_name_list(os.path.join(lists, "train_aug.txt")) == [f"train_{i:06d}" for i in range(8)]
    labels = load_cls_labels(os.path.join(lists, "cls_labels_onehot.npy"), K)
    assert len(labels) == 11
    for name, vector in labels.items():
        mask = read_mask(os.path.join(root, "SegmentationClassAug", f"{name}.png"))
        np.testing.assert_array_equal(vector, labels_from_mask(mask, K))
    assert prepare_voc.prepare_voc(root, num_classes=K) == {}
    train = TrainDataset(open_source("voc", root, "train_aug", class_names=synthetic_class_names(K)),
                         ToCoViews(crop_size=16))
    assert len(train) == 8 and train[0]["image"].shape == (3, 16, 16)
    other = str(tmp_path / "lists")
    assert prepare_voc.main(["--root", root, "--lists-dir", other, "--num-classes", str(K)]) == 0
    assert sorted(os.listdir(other)) == ["cls_labels_onehot.npy", "train.txt", "train_aug.txt", "val.txt"]
    assert "wrote" in capsys.readouterr().out


def test_prepare_voc_skips_temporary_files(medium_set, tmp_path):
    """A write killed mid-way leaves a ``.tmp-*.png`` beside the masks: it is not an image name."""
    root = str(tmp_path / "VOC2012")
    lists = _voc_copy(medium_set, root)
    with open(os.path.join(root, "SegmentationClassAug", ".tmp-abc123.png"), "wb") as handle:
        handle.write(b"half a png")
    prepare_voc.prepare_voc(root, num_classes=K)
    assert load_name_list(os.path.join(lists, "train_aug.txt")) == [f"train_{i:06d}" for i in range(8)]


def test_prepare_voc_reports_bad_masks(medium_set, tmp_path, capsys):
    root = str(tmp_path / "VOC2012")
    _voc_copy(medium_set, root)
    bad = os.path.join(root, "SegmentationClassAug", "val_000001.png")
    Image.fromarray(np.full((40, 40), 9, np.uint8)).save(bad)
    with pytest.raises(DataError, match="val_000001.png"):
        prepare_voc.prepare_voc(root, num_classes=K)
    assert prepare_voc.main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


class FakeCOCO:
    """The part of pycocotools.coco.COCO that prepare_coco uses, over in-memory binary masks."""

    def __init__(self, images, anns):
        self.images = {img["id"]: img for img in images}
        self.anns = anns

    def getCatIds(self):
        return list(COCO_CATEGORY_IDS)

    def loadCats(self, ids):
        names = dict(zip(COCO_CATEGORY_IDS, COCO_CLASSES[1:]))
        return [{"id": i, "name": names[i]} for i in ids]

    def getImgIds(self):
        return list(self.images)

    def loadImgs(self, image_id):
        return [self.images[image_id]]

    def getAnnIds(self, imgIds, iscrowd=None):
        return [k for k, a in enumerate(self.anns) if a["image_id"] == imgIds]

    def loadAnns(self, ids):
        return [self.anns[k] for k in ids]

    def annToMask(self, ann):
        return ann["mask"].astype(np.uint8)


def _box(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def test_paint_class_mask_small_on_top_and_crowd():
    big, small, crowd = _box(6, 6, 0, 6, 0, 6), _box(6, 6, 2, 4, 2, 4), _box(6, 6, 0, 1, 0, 6)
    mask = prepare_coco.paint_class_mask(6, 6, [(3, 4.0, False, small), (1, 36.0, False, big)])
    assert mask[3, 3] == 3 and mask[0, 0] == 1
    empty = np.zeros((6, 6), bool)
    mask = prepare_coco.paint_class_mask(6, 6, [(2, 6.0, True, crowd), (1, 4.0, False, small | empty)],
                                         crowd="ignore")
    assert (mask[0] == 255).all() and mask[3, 3] == 1 and mask[5, 5] == 0
    with pytest.raises(ValueError, match="crowd"):
        prepare_coco.paint_class_mask(6, 6, [], crowd="drop")


def test_prepare_coco_with_fake_api_and_coco_source(tmp_path, monkeypatch):
    root = tmp_path / "coco"
    names = {"train2014": ["COCO_train2014_000000000001", "COCO_train2014_000000000002",
                           "COCO_train2014_000000000003"], "val2014": ["COCO_val2014_000000000007"]}
    apis = {}
    for subset, stems in names.items():
        (root / subset).mkdir(parents=True)
        images, anns = [], []
        for k, stem in enumerate(stems):
            Image.fromarray(np.full((10, 14, 3), 100, np.uint8)).save(root / subset / f"{stem}.jpg")
            images.append({"id": k + 1, "file_name": f"{stem}.jpg", "height": 10, "width": 14})
            if k == 2:
                continue  # an image without annotations is left out of the lists
            anns.append({"image_id": k + 1, "category_id": 90, "area": 140.0, "iscrowd": 0,
                         "mask": _box(10, 14, 0, 10, 0, 14)})
            anns.append({"image_id": k + 1, "category_id": 18, "area": 4.0, "iscrowd": 0,
                         "mask": _box(10, 14, 1, 3, 1, 3)})
        apis[subset] = FakeCOCO(images, anns)
    (root / "annotations").mkdir()
    monkeypatch.setattr(prepare_coco, "load_coco_api",
                        lambda path: apis[os.path.basename(path)[len("instances_"):-len(".json")]])
    written = prepare_coco.prepare_coco(str(root), verbose=False)
    assert set(written) == {"train.txt", "val.txt", "cls_labels_onehot.npy"}
    mask = read_mask(str(root / "SegmentationClass" / "train2014" / "COCO_train2014_000000000001.png"))
    assert mask[2, 2] == COCO_CLASSES.index("dog") and mask[8, 8] == COCO_CLASSES.index("toothbrush")
    source = COCOSource(str(root), "train")
    assert source.names == names["train2014"][:2] and source.num_classes == 81
    label = TrainDataset(source, ToCoViews(crop_size=16))[(0, 0)]["cls_label"]
    assert label.shape == (80,) and torch.nonzero(label).flatten().tolist() == [16, 79]
    val = EvalDataset(open_source("coco", str(root), "val"))
    assert val[0]["mask"].shape == (10, 14)


def test_prepare_coco_needs_pycocotools(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match="pip install pycocotools"):
        prepare_coco.load_coco_api(str(tmp_path / "instances_train2014.json"))
    assert prepare_coco.main(["--root", str(tmp_path)]) == 2
    assert "pycocotools" in capsys.readouterr().err
