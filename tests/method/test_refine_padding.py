"""``refine_cams_with_bkg``'s ``max_present``: the padded class count known on the host (no device read) gives the
same labels as counting the classes, padding beyond it changes nothing, and a count that is too small is refused;
``TrainBatch.from_loader`` counts it from the loader's labels."""
import pytest
import torch
import torch.nn.functional as F

from toco_fast.data import TrainBatch
from toco_fast.method.refine import refine_cams_with_bkg


def _inputs():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 24, 20, generator=generator)
    cls_labels = torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 0]])
    cams = F.interpolate(torch.rand(3, 5, 4, 4, generator=generator), size=(24, 20), mode="bilinear",
                         align_corners=False) * cls_labels[:, :, None, None]
    return images, cams, cls_labels


@pytest.mark.parametrize("max_present", [3, 5])
def test_a_host_known_class_count_gives_the_counted_result(max_present):
    images, cams, cls_labels = _inputs()
    counted = refine_cams_with_bkg(images, cams, cls_labels, impl="reference")
    given = refine_cams_with_bkg(images, cams, cls_labels, impl="reference", max_present=max_present)
    assert torch.equal(counted, given)


@pytest.mark.parametrize("max_present,match", [(2, "an image has 3 present classes"), (-1, "int >= 0"),
                                               (2.0, "int >= 0")])
def test_a_wrong_class_count_is_refused(max_present, match):
    images, cams, cls_labels = _inputs()
    with pytest.raises(ValueError, match=f"max_present: .*{match}"):
        refine_cams_with_bkg(images, cams, cls_labels, max_present=max_present)


def test_train_batch_counts_present_classes_on_the_host():
    raw = {"image": torch.zeros(3, 3, 8, 8), "img_box": torch.zeros(3, 4, dtype=torch.int64),
           "cls_label": torch.tensor([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=torch.uint8)}
    assert TrainBatch.from_loader(raw, torch.device("cpu")).max_present == 2
