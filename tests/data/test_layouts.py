"""Dataset layouts: VOC, folder + CSV, COCO naming, the synthetic class catalogue and meta file, the factory."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from toco_fast.data.classes import VOC_CLASSES
from toco_fast.data.datasets import EvalDataset, TrainDataset
from toco_fast.data.errors import DataError
from toco_fast.data.layouts.coco import coco_subset
from toco_fast.data.layouts.factory import KINDS, open_source
from toco_fast.data.layouts.folder import FolderSource
from toco_fast.data.layouts.source import DEFAULT_LISTS_SUBDIR
from toco_fast.data.layouts.synthetic import (META_NAME, open_synthetic, read_meta, synthetic_class_names,
                                              synthetic_classes)
from toco_fast.data.views import ToCoViews

K = 5  # classes of the medium_set fixture


def test_voc_prefers_jpg_and_accepts_png(tmp_path):
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "JPEGImages" / "a.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "JPEGImages" / "b.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb 1\n\n")
    source = open_source("voc", str(root), "train")
    assert [os.path.basename(p) for p in source.image_paths] == ["a.jpg", "b.png"]
    assert source.class_names == list(VOC_CLASSES)


def _folder(tmp_path, rows, with_masks=True, classes="background\ncat\ndog\n"):
    root = tmp_path / "folder"
    (root / "images" / "sub").mkdir(parents=True)
    (root / "classes.txt").write_text(classes)
    rng = np.random.default_rng(0)
    for stem, rel in (("a", "a.jpg"), ("b", "sub/b.png"), ("c", "c.png")):
        Image.fromarray((rng.random((12, 10, 3)) * 255).astype(np.uint8)).save(root / "images" / rel)
    if with_masks:
        (root / "masks").mkdir()
        for stem, ids in (("a", (1, 2)), ("b", (2,)), ("c", ())):
            mask = np.zeros((12, 10), np.uint8)
            for k, cid in enumerate(ids):
                mask[k * 3:k * 3 + 3] = cid
            Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    (root / "train.csv").write_text(rows)
    return str(root)


def test_folder_source_with_csv(tmp_path):
    root = _folder(tmp_path, "image,labels\na.jpg,cat;dog\nsub/b.png,dog\n\nc.png,\n")
    source = FolderSource(root, "train")
    assert source.names == ["a", "b", "c"] and source.class_names == ["background", "cat", "dog"]
    np.testing.assert_array_equal(source.cls_label(0), [1, 1])
    np.testing.assert_array_equal(source.cls_label(1), [0, 1])
    np.testing.assert_array_equal(source.cls_label(2), [0, 0])
    item = TrainDataset(source, ToCoViews(crop_size=16))[(0, 1)]
    assert item["name"] == "b" and item["cls_label"].tolist() == [0.0, 1.0]
    val = EvalDataset(source)
    assert val[0]["mask"].shape == (12, 10) and val[0]["cls_label"].tolist() == [1.0, 1.0]


def test_folder_without_masks(tmp_path):
    root = _folder(tmp_path, "image,labels\na.jpg,cat\n", with_masks=False)
    source = open_source("folder", root, "train")
    assert not source.has_masks
    with pytest.raises(DataError, match="no masks"):
        EvalDataset(source)
    sample = EvalDataset(source, require_masks=False)[0]
    assert (sample["mask"] == 255).all() and sample["cls_label"].tolist() == [1.0, 0.0]


@pytest.mark.parametrize("rows,match", [
    ("name,labels\na.jpg,cat\n", r"train.csv:1: header"),
    ("image,labels\na.jpg,cat\nc.png,bird\n", r"train.csv:3: unknown class 'bird'"),
    ("image,labels\na.jpg,background\n", r"train.csv:2: 'background' is the background"),
    ("image,labels\na.jpg,cat,extra\n", r"train.csv:2: expected 2 columns"),
    ("image,labels\nmissing.jpg,cat\n", r"train.csv: 1 listed image\(s\) not found, e.g. .*missing.jpg"),
    ("image,labels\na.jpg,cat\nsub/a.jpg,dog\n", r"train.csv: images 'a.jpg' and 'sub/a.jpg' share"),
    ("image,labels\n", r"train.csv: no image rows"),
])
def test_folder_csv_errors_name_file_and_line(tmp_path, rows, match):
    root = _folder(tmp_path, rows)
    with pytest.raises(DataError, match=match):
        FolderSource(root, "train")


def test_folder_classes_file_errors(tmp_path):
    root = _folder(tmp_path, "image,labels\na.jpg,cat\n", classes="background\ncat\ncat\n")
    with pytest.raises(DataError, match=r"classes.txt: class name 'cat' appears twice"):
        FolderSource(root, "train")
    os.remove(os.path.join(root, "classes.txt"))
    with pytest.raises(DataError, match=r"classes.txt: class list not found"):
        FolderSource(root, "train")


def test_folder_files_written_by_excel_carry_a_byte_order_mark(tmp_path):
    root = _folder(tmp_path, "image,labels\na.jpg,cat\n")
    for name in ("train.csv", "classes.txt"):
        path = os.path.join(root, name)
        with open(path, "rb") as handle:
            content = handle.read()
        with open(path, "wb") as handle:
            handle.write(b"\xef\xbb\xbf" + content)  # UTF-8 with a byte-order mark
    source = FolderSource(root, "train")
    assert source.class_names == ["background", "cat", "dog"] and source.names == ["a"]


@pytest.mark.parametrize("name", ["train.csv", "classes.txt"])
def test_folder_files_that_are_not_utf8_name_the_file(tmp_path, name):
    root = _folder(tmp_path, "image,labels\na.jpg,cat\n")
    path = os.path.join(root, name)
    with open(path, "ab") as handle:
        handle.write("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{re.escape(path)}: .* is not UTF-8 text .*save it as UTF-8"):
        FolderSource(root, "train")


def test_coco_subset_from_name():
    assert coco_subset("COCO_val2014_000000000042", "train") == "val2014"
    assert coco_subset("000000000042", "train") == "train2014"
    assert coco_subset("000000000042", "val_part") == "val2014"


def test_pairs_share_shape_and_differ_in_marker():
    classes = synthetic_classes(21)
    assert len(classes) == 20
    for a, b in zip(classes[0::2], classes[1::2]):
        assert a.shape == b.shape and a.body_hue == b.body_hue and a.marker != b.marker
    names = synthetic_class_names(255)
    assert names[0] == "background" and len(set(names)) == 255
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_classes(1)


def test_synthetic_meta_file(medium_set, tmp_path):
    meta = read_meta(medium_set)
    assert meta["class_names"] == synthetic_class_names(K) and meta["params"]["num_train"] == 8
    source = open_synthetic(medium_set, "val")
    assert source.kind == "synthetic" and source.class_names == synthetic_class_names(K) and len(source) == 3
    assert source.list_file == os.path.join(medium_set, DEFAULT_LISTS_SUBDIR, "val.txt")
    assert read_meta(str(tmp_path)) is None
    with pytest.raises(DataError, match=META_NAME + ": synthetic meta file not found"):
        open_synthetic(str(tmp_path), "train")
    (tmp_path / META_NAME).write_text("{not json")
    with pytest.raises(DataError, match=META_NAME + ": cannot read synthetic meta file"):
        read_meta(str(tmp_path))
    (tmp_path / META_NAME).write_text(json.dumps({"params": {}}))
    with pytest.raises(DataError, match=META_NAME + ": not a toco_fast synthetic meta file"):
        read_meta(str(tmp_path))


def test_open_source_rejects_unknown_kind_and_options(medium_set):
    assert KINDS == ("voc", "coco", "folder", "synthetic")
    with pytest.raises(ValueError, match="kind"):
        open_source("imagenet", medium_set, "train")
    with pytest.raises(ValueError, match="options"):
        open_source("synthetic", medium_set, "train", lists_dir="x")
