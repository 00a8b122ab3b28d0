"""In-training validation (``toco_fast.eval.validation``) on a tiny ToCo: the three metrics against the official
computation written out, the image limit, the train/eval mode, and ``validate``'s use of the config."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from toco_fast.config import CamConfig, load_config
from toco_fast.eval.metrics import SegmentationMetric
from toco_fast.eval.validation import evaluate_model, validate


def _tiny_toco(num_classes=4):
    from toco_fast.model import ToCo

    torch.manual_seed(0)
    return ToCo(backbone=dict(embed_dim=32, depth=3, num_heads=2, patch_size=16, img_size=32),
                num_classes=num_classes, proj_dim=16)


def _val_items():
    """Three one-image batches of different sizes, as an ``EvalDataset`` loader yields them."""
    gen = torch.Generator().manual_seed(1)
    items = []
    for i, (h, w) in enumerate([(20, 27), (33, 18), (24, 24)]):
        mask = torch.randint(0, 4, (h, w), generator=gen)
        mask[:2] = 255
        cls_label = torch.zeros(3)
        cls_label[i % 3] = 1
        items.append({"name": [f"im{i}"], "image": torch.randn(1, 3, h, w, generator=gen), "mask": mask[None],
                      "cls_label": cls_label[None]})
    return items


def test_evaluate_model_returns_three_metrics_and_restores_mode():
    from toco_fast.method.cam import multi_scale_cam
    from toco_fast.method.labels import cam_to_label

    model = _tiny_toco()
    items = _val_items()
    model.train()
    results = evaluate_model(model, items, num_classes=4, class_names=["bg", "a", "b", "c"], crop_size=32,
                             cam=CamConfig(scales=(1.0, 0.5)))
    assert model.training
    assert list(results) == ["CAM", "aux_CAM", "Seg_Pred"]
    assert all(r.num_pixels == sum(int((it["mask"] != 255).sum()) for it in items) for r in results.values())

    model.eval()
    expected = {k: SegmentationMetric(4) for k in results}
    with torch.no_grad():
        for it in items:
            x = F.interpolate(it["image"], size=(32, 32), mode="bilinear", align_corners=False)
            hw = it["mask"].shape[-2:]
            seg = F.interpolate(model(x).seg_logits, size=hw, mode="bilinear", align_corners=False)
            expected["Seg_Pred"].update(seg.argmax(1), it["mask"])
            for key, cam in zip(("CAM", "aux_CAM"), multi_scale_cam(model, x, (1.0, 0.5))):
                cam = F.interpolate(cam, size=hw, mode="bilinear", align_corners=False)
                expected[key].update(cam_to_label(cam, it["cls_label"], bkg_thre=0.5), it["mask"])
    for key in results:
        assert torch.equal(results[key].hist, expected[key].hist), key

    subset = evaluate_model(model, items, num_classes=4, crop_size=32, cam=CamConfig(scales=(1.0,)), max_images=2)
    assert not model.training
    assert subset["Seg_Pred"].num_pixels == sum(int((it["mask"] != 255).sum()) for it in items[:2])


def test_evaluate_model_rejects_batches_without_masks_or_labels():
    items = [{"name": ["im0"], "image": torch.randn(1, 3, 32, 32), "mask": torch.zeros(1, 32, 32, dtype=torch.long)}]
    with pytest.raises(ValueError, match=r"loader: batch lacks \['cls_label'\]"):
        evaluate_model(_tiny_toco(), items, num_classes=4, crop_size=32)


def test_validate_uses_the_config_and_leaves_the_rng_untouched():
    from toco_fast.data import ValData

    model = _tiny_toco()
    items = _val_items()
    cfg = load_config("synthetic_tiny", ["model.num_classes=4", "cam.bkg_thre=0.3", "cam.scales=[1.0]",
                                         "eval.crop_size=32", "eval.max_images=2"])
    names = ["bg", "a", "b", "c"]
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    results = validate(model, ValData(loader=items, class_names=names), cfg, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), before)
    expected = evaluate_model(model, items, num_classes=4, class_names=names, crop_size=32, max_images=2,
                              cam=dataclasses.replace(CamConfig(), bkg_thre=0.3, scales=(1.0,)))
    for key in expected:
        assert torch.equal(results[key].hist, expected[key].hist), key
    assert results["CAM"].class_names == names
