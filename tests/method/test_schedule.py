"""The loss schedule of the official VOC and COCO scripts."""
from toco_fast.config import load_config
from toco_fast.method import schedule


def test_loss_weight_schedules():
    voc = load_config("voc_vit_b").loss
    assert schedule.loss_weights(voc, 0) == {"cls": 1.0, "cls_aux": 1.0, "ptc": 0.2, "ctc": 0.5}
    assert schedule.loss_weights(voc, 2000) == schedule.loss_weights(voc, 0)  # official: n_iter <= 2000
    assert schedule.loss_weights(voc, 2001) == {"cls": 1.0, "cls_aux": 1.0, "ptc": 0.2, "ctc": 0.5, "seg": 0.1,
                                                "reg": 0.05}
    assert schedule.pseudo_label_cam(voc, 0) == "final"
    coco = load_config("coco_vit_b").loss
    assert schedule.loss_weights(coco, 8000) == {"cls": 1.0, "cls_aux": 1.0}
    assert schedule.loss_weights(coco, 8001) == {"cls": 1.0, "cls_aux": 1.0, "seg": 0.1, "reg": 0.05}
    assert schedule.loss_weights(coco, 12000) == schedule.loss_weights(coco, 8001)
    assert set(schedule.loss_weights(coco, 12001)) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg"}
    assert [schedule.pseudo_label_cam(coco, n) for n in (8001, 12000, 12001)] == ["aux", "aux", "final"]
