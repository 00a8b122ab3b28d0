"""What ``python -m toco_fast.infer`` reads (``toco_fast.infer.items``): folders and lists of images, done items
that skip decoding, the working copy, and the list-of-items batches."""
import numpy as np
import pytest
import torch
from PIL import Image

from toco_fast.infer.items import InferenceItems, OutputSet, collate_items, image_folder_source, image_list_source

CLASSES = ["background", "a", "b"]


def _image(path, size=(20, 30)):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path)


def test_folder_and_list_sources(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("b.png", "a.jpg", "notes.txt"):
        _image(tmp_path / "in" / name) if name != "notes.txt" else (tmp_path / "in" / name).write_text("x")
    folder = image_folder_source(str(tmp_path / "in"), CLASSES)
    assert folder.names == ["a", "b"] and not folder.has_masks and folder.num_classes == 3
    (tmp_path / "list.txt").write_text("# images\nin/b.png\n\n" + str(tmp_path / "in" / "a.jpg") + "\n")
    assert image_list_source(str(tmp_path / "list.txt"), CLASSES).names == ["b", "a"]
    (tmp_path / "bad.txt").write_text("in/b.png\nin/missing.png\n")
    with pytest.raises(ValueError, match=r"--image-list: .*bad.txt:2: in/missing.png: no such image file"):
        image_list_source(str(tmp_path / "bad.txt"), CLASSES)
    (tmp_path / "twice.txt").write_text("in/b.png\nin/b.png\n")
    with pytest.raises(ValueError, match="share the output name 'b'"):
        image_list_source(str(tmp_path / "twice.txt"), CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--images .*empty: no images"):
        image_folder_source(str(tmp_path / "empty"), CLASSES)
    with pytest.raises(ValueError, match="--images: .*nope: not a folder"):
        image_folder_source(str(tmp_path / "nope"), CLASSES)


def test_items_work_copy_done_and_errors(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "in" / name)
    (tmp_path / "in" / "c.png").write_bytes(b"broken")
    source = image_folder_source(str(tmp_path / "in"), CLASSES)
    outputs = OutputSet(str(tmp_path / "out"), (("pseudo", ".png"), ("pseudo_rgb", ".png")))
    for folder in ("pseudo", "pseudo_rgb"):
        (tmp_path / "out" / folder).mkdir(parents=True)
        (tmp_path / "out" / folder / "b.png").write_bytes(b"")
    items = InferenceItems(source, work_size=16, outputs=outputs, overwrite=False)
    first, done, bad = (items[i] for i in range(3))
    assert first["work"].shape == (3, 16, 16) and first["image"].shape == (3, 20, 30) and not first["has_label"]
    assert first["mask"].eq(255).all() and first["cls_label"].eq(0).all()
    assert done == {"name": "b", "done": True, "mask": None}
    assert set(bad) == {"name", "error"} and "cannot read image" in bad["error"]
    assert "done" not in InferenceItems(source, outputs=outputs, overwrite=True)[1]
    batch = collate_items([first, done])
    assert isinstance(batch, list) and batch[1] is done
    expected = torch.nn.functional.interpolate(first["image"][None], size=(16, 16), mode="bilinear",
                                               align_corners=False)[0]
    torch.testing.assert_close(first["work"], expected, rtol=0, atol=0)
