"""Synthetic dataset generation: determinism, labels vs masks, object counts, regeneration rules, CLI."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from toco_fast.data.errors import DataError
from toco_fast.data.files import load_cls_labels, load_name_list, read_mask
from toco_fast.data.layouts.synthetic import META_NAME, open_synthetic, synthetic_class_names
from toco_fast.data.tools.make_synthetic import generate, main, render_sample

PARAMS = dict(num_train=10, num_val=4, num_classes=5, size=48, seed=3)


def _tree_bytes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "set")
    assert generate(root, boundary=1, **PARAMS)
    return root


def test_same_seed_gives_identical_bytes(synth, tmp_path):
    again = str(tmp_path / "again")
    generate(again, boundary=1, **PARAMS)
    first, second = _tree_bytes(synth), _tree_bytes(again)
    assert sorted(first) == sorted(second)
    assert len(first) == 2 * (PARAMS["num_train"] + PARAMS["num_val"]) + 4
    for rel in first:
        assert first[rel] == second[rel], rel


def test_other_seed_differs(synth, tmp_path):
    other = str(tmp_path / "other")
    generate(other, boundary=1, **dict(PARAMS, seed=4))
    a, b = _tree_bytes(synth), _tree_bytes(other)
    images = [rel for rel in a if rel.startswith("JPEGImages")]
    assert all(a[rel] != b[rel] for rel in images)


def test_image_depends_only_on_seed_split_index(tmp_path):
    """A larger set shares its first images with a smaller one."""
    small, large = str(tmp_path / "s"), str(tmp_path / "l")
    generate(small, **dict(PARAMS, num_train=2, num_val=1))
    generate(large, **PARAMS)
    for rel in ("JPEGImages/train_000001.png", "SegmentationClassAug/val_000000.png"):
        assert open(os.path.join(small, rel), "rb").read() == open(os.path.join(large, rel), "rb").read()


def test_layout_labels_and_object_counts(synth):
    lists = os.path.join(synth, "ImageSets", "Segmentation")
    labels = load_cls_labels(os.path.join(lists, "cls_labels_onehot.npy"), PARAMS["num_classes"])
    for split in ("train", "val"):
        names = load_name_list(os.path.join(lists, f"{split}.txt"))
        assert len(names) == PARAMS[f"num_{split}"]
        for name in names:
            image = np.asarray(Image.open(os.path.join(synth, "JPEGImages", f"{name}.png")))
            mask = read_mask(os.path.join(synth, "SegmentationClassAug", f"{name}.png"))
            assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and mask.shape == (48, 48)
            values = set(np.unique(mask).tolist())
            assert values <= set(range(PARAMS["num_classes"])) | {255}
            present = sorted(v for v in values if v not in (0, 255))
            assert 1 <= len(present) <= 3
            expected = np.zeros(PARAMS["num_classes"] - 1, dtype=np.float32)
            expected[np.array(present) - 1] = 1
            np.testing.assert_array_equal(labels[name], expected)
            assert 255 in values  # boundary=1 marks object edges


def test_objects_are_drawn_where_the_mask_says():
    """Object pixels are not background-coloured: each class region holds its body or marker colours."""
    rng = np.random.default_rng(np.random.SeedSequence([0, 0, 0]))
    image, mask = render_sample(rng, 64, 7)
    assert ((mask > 0) & (mask < 255)).any()
    bg = image[mask == 0].reshape(-1, 3).astype(float)
    fg = image[(mask > 0) & (mask < 255)].reshape(-1, 3).astype(float)
    saturation = lambda px: (px.max(1) - px.min(1)).mean()
    assert saturation(fg) > saturation(bg)


def test_skip_when_up_to_date_and_regenerate_on_change(tmp_path):
    root = str(tmp_path / "set")
    assert generate(root, **PARAMS)
    image = os.path.join(root, "JPEGImages", "train_000000.png")
    stamp = os.stat(image).st_mtime_ns
    assert not generate(root, **PARAMS)
    assert os.stat(image).st_mtime_ns == stamp
    assert generate(root, **dict(PARAMS, num_train=3))
    assert not os.path.exists(os.path.join(root, "JPEGImages", "train_000005.png"))
    assert len(open_synthetic(root, "train")) == 3
    os.remove(os.path.join(root, "SegmentationClassAug", "val_000001.png"))
    assert generate(root, **dict(PARAMS, num_train=3))  # incomplete -> regenerated


def test_refuses_foreign_folder_and_bad_params(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to overwrite"):
        generate(str(tmp_path), **PARAMS)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="num_classes"):
        generate(str(tmp_path / "x"), **dict(PARAMS, num_classes=1))
    with pytest.raises(ValueError, match="size"):
        generate(str(tmp_path / "x"), **dict(PARAMS, size=4))


def test_cli_and_meta(tmp_path, capsys):
    out = str(tmp_path / "cli")
    args = ["--out", out, "--num-train", "3", "--num-val", "2", "--num-classes", "4", "--size", "32",
            "--seed", "1"]
    assert main(args) == 0
    assert "wrote 3 train + 2 val" in capsys.readouterr().out
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    meta = json.load(open(os.path.join(out, META_NAME)))
    assert meta["class_names"] == synthetic_class_names(4)
    assert meta["params"]["size"] == 32
    source = open_synthetic(out, "val")
    assert source.num_classes == 4 and source.kind == "synthetic" and len(source) == 2
    with pytest.raises(DataError, match=META_NAME):
        open_synthetic(str(tmp_path), "train")
