"""Class lists and the VOC colour map."""
import pytest

from toco_fast.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES, VOC_CLASSES, check_class_names, voc_palette


def test_class_lists():
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[-1] == "tvmonitor"
    assert len(COCO_CLASSES) == 81 and COCO_CLASSES[1] == "person" and COCO_CLASSES[-1] == "toothbrush"
    assert list(COCO_CATEGORY_IDS) == sorted(COCO_CATEGORY_IDS) and COCO_CATEGORY_IDS[-1] == 90


def test_voc_palette():
    palette = voc_palette()
    assert palette.shape == (256, 3) and palette[1].tolist() == [128, 0, 0] and palette[255].tolist() == [224, 224, 192]


def test_check_class_names():
    assert check_class_names(("background", "cat"), "here") == ["background", "cat"]
    with pytest.raises(ValueError, match="here: need the background class"):
        check_class_names(["background"], "here")
    with pytest.raises(ValueError, match="here: class name 'cat' appears twice"):
        check_class_names(["background", "cat", "cat"], "here")
