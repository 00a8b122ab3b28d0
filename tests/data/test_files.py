"""Shared file formats: round trips, and writes that fail half-way keep the previous file and leave no debris."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from toco_fast.data.errors import DataError
from toco_fast.data.files import (labels_from_mask, load_cls_labels, load_name_list, mask_problems, read_image,
                                  read_mask, save_cls_labels, write_name_list, write_png)


def test_round_trips(tmp_path):
    mask = np.arange(48, dtype=np.uint8).reshape(6, 8) % 5
    image = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    write_png(str(tmp_path / "mask.png"), mask)
    write_png(str(tmp_path / "image.png"), image, compress_level=1)
    np.testing.assert_array_equal(read_mask(str(tmp_path / "mask.png")), mask)
    np.testing.assert_array_equal(read_image(str(tmp_path / "image.png")), image)
    write_name_list(str(tmp_path / "train.txt"), ["a", "b"])
    assert (tmp_path / "train.txt").read_text() == "a\nb\n"
    assert load_name_list(str(tmp_path / "train.txt")) == ["a", "b"]
    labels = {"a": np.array([1, 0, 1]), "b": np.array([0, 0, 0])}
    save_cls_labels(str(tmp_path / "cls_labels_onehot.npy"), labels)
    loaded = load_cls_labels(str(tmp_path / "cls_labels_onehot.npy"), 4)
    assert sorted(loaded) == ["a", "b"] and loaded["a"].dtype == np.uint8
    np.testing.assert_array_equal(loaded["a"], [1, 0, 1])
    assert sorted(os.listdir(tmp_path)) == ["cls_labels_onehot.npy", "image.png", "mask.png", "train.txt"]


def test_failed_label_cache_write_keeps_the_previous_cache(tmp_path, monkeypatch):
    path = str(tmp_path / "cls_labels_onehot.npy")
    save_cls_labels(path, {"a": np.array([1, 0])})

    def save_half(handle, *args, **kwargs):
        handle.write(b"\x93NUMPY")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", save_half)
    with pytest.raises(OSError, match="disk full"):
        save_cls_labels(path, {"b": np.array([0, 1])})
    monkeypatch.undo()
    assert list(load_cls_labels(path, 3)) == ["a"]
    assert os.listdir(tmp_path) == ["cls_labels_onehot.npy"]


def test_failed_png_write_keeps_the_previous_png(tmp_path, monkeypatch):
    path = str(tmp_path / "mask.png")
    write_png(path, np.ones((4, 4), np.uint8))

    def save_half(self, handle, *args, **kwargs):
        handle.write(b"\x89PNG\r\n")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", save_half)
    with pytest.raises(OSError, match="disk full"):
        write_png(path, np.zeros((4, 4), np.uint8))
    monkeypatch.undo()
    assert (read_mask(path) == 1).all()
    assert os.listdir(tmp_path) == ["mask.png"]


def test_mask_helpers():
    mask = np.array([[0, 1, 255], [3, 3, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(labels_from_mask(mask, 4), [1, 0, 1])
    assert mask_problems(mask, 4) == []
    assert mask_problems(mask, 3, image_hw=(2, 3)) == ["class ids 3 are >= num_classes=3 (and not the ignore index "
                                                       "255)"]
    with pytest.raises(ValueError, match="class id 3 >= num_classes=3"):
        labels_from_mask(mask, 3)


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing.png: image file not found"):
        read_image(str(tmp_path / "missing.png"))
    with pytest.raises(DataError, match=r"missing.txt: split list not found"):
        load_name_list(str(tmp_path / "missing.txt"))


@pytest.mark.parametrize("name, mode, dtype", [("scan.png", "I;16", np.uint16), ("scan.tif", "I", np.int32),
                                               ("scan.tiff", "F", np.float32)])
def test_wide_grey_images_are_rejected_not_whitened(tmp_path, name, mode, dtype):
    """PIL clips 16/32-bit grey to 255 when it converts to RGB: such an image would train as all white."""
    path = tmp_path / name
    Image.fromarray(np.full((6, 8), 40000, dtype=dtype)).save(path)
    assert Image.open(path).mode == mode
    with pytest.raises(DataError, match=rf"{name}: image mode {re.escape(mode)} has 16 or 32 bits.*convert it to "
                                        r"8 bits"):
        read_image(str(path))


def test_text_files_accept_a_byte_order_mark_and_reject_other_encodings(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(b"\xef\xbb\xbfa\nb\n")  # UTF-8 with a BOM, as Windows tools write it
    assert load_name_list(str(path)) == ["a", "b"]
    path.write_bytes("a\nb\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train.txt: split list is not UTF-8 text"):
        load_name_list(str(path))
