"""Dataset layouts: VOC (on a generated set), prepare_voc, folder + CSV, COCO masks and loader, the factory."""
import os
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES, VOC_CLASSES, voc_palette
from toco_fast.data.coco import COCOSource, coco_subset
from toco_fast.data.dataset import EvalDataset, TrainDataset
from toco_fast.data.errors import DataError
from toco_fast.data.factory import open_source
from toco_fast.data.files import labels_from_mask, load_cls_labels, load_name_list, read_mask
from toco_fast.data.folder import FolderSource
from toco_fast.data import prepare_coco, prepare_voc
from toco_fast.data.synthetic import generate, synthetic_class_names
from toco_fast.data.transforms import ToCoViews

K = 5


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sources") / "synth")
    generate(root, num_train=8, num_val=3, num_classes=K, size=40, seed=11)
    return root


def test_voc_source_reads_generated_set(synth):
    names = synthetic_class_names(K)
    source = open_source("voc", synth, "train", class_names=names)
    assert len(source) == 8 and source.num_classes == K and source.has_masks
    train = TrainDataset(source, ToCoViews(crop_size=32), seed=1)
    item = train[(0, 2)]
    assert item["name"] == "train_000002"
    assert item["cls_label"].shape == (K - 1,) and item["cls_label"].dtype == torch.float32
    mask = read_mask(os.path.join(synth, "SegmentationClassAug", "train_000002.png"))
    np.testing.assert_array_equal(item["cls_label"].numpy(), labels_from_mask(mask, K))
    assert torch.equal(train[2]["image"], item["image"])  # bare index = dataset.epoch (0)
    train.set_epoch(1)
    assert not torch.equal(train[2]["image"], item["image"])
    val = EvalDataset(open_source("synthetic", synth, "val"))
    sample = val[1]
    assert sample["image"].shape == (3, 40, 40) and sample["mask"].dtype == torch.int64
    np.testing.assert_array_equal(sample["mask"].numpy(),
                                  read_mask(os.path.join(synth, "SegmentationClassAug", "val_000001.png")))
    with pytest.raises(IndexError):
        val[3]


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


def _voc_copy(synth, root):
    """A VOC root with the synthetic images and masks, official lists only (no train_aug, no label cache)."""
    for sub in ("JPEGImages", "SegmentationClassAug"):
        shutil.copytree(os.path.join(synth, sub), os.path.join(root, sub))
    lists = os.path.join(root, "ImageSets", "Segmentation")
    os.makedirs(lists)
    with open(os.path.join(lists, "train.txt"), "w") as handle:
        handle.write("train_000000\ntrain_000001\n")
    with open(os.path.join(lists, "val.txt"), "w") as handle:
        handle.write("val_000000\nval_000001\nval_000002\n")
    return lists


def test_prepare_voc_writes_lists_and_label_cache(synth, tmp_path, capsys):
    root = str(tmp_path / "VOC2012")
    lists = _voc_copy(synth, root)
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


def test_prepare_voc_reports_bad_masks(synth, tmp_path, capsys):
    root = str(tmp_path / "VOC2012")
    _voc_copy(synth, root)
    bad = os.path.join(root, "SegmentationClassAug", "val_000001.png")
    Image.fromarray(np.full((40, 40), 9, np.uint8)).save(bad)
    with pytest.raises(DataError, match="val_000001.png"):
        prepare_voc.prepare_voc(root, num_classes=K)
    assert prepare_voc.main(["--root", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


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


def test_coco_subset_from_name():
    assert coco_subset("COCO_val2014_000000000042", "train") == "val2014"
    assert coco_subset("000000000042", "train") == "train2014"
    assert coco_subset("000000000042", "val_part") == "val2014"


def test_factory_and_palette(synth):
    with pytest.raises(ValueError, match="kind"):
        open_source("imagenet", synth, "train")
    with pytest.raises(ValueError, match="options"):
        open_source("synthetic", synth, "train", lists_dir="x")
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette[1].tolist() == [128, 0, 0] and palette[255].tolist() == [224, 224, 192]


def test_eval_without_mask_or_label_for_inference(synth, tmp_path):
    """An unlabelled split (like VOC test): all-ignore mask, zero label, no error."""
    root = str(tmp_path / "voc")
    shutil.copytree(synth, root)
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


def test_package_exports_resolve_and_generator_skips_torch():
    import subprocess

    import toco_fast.data as data

    for name in data.__all__:
        assert getattr(data, name) is not None, name
    code = "import sys, toco_fast.data.synthetic; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
