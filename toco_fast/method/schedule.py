"""The loss schedule of the official ToCo training scripts (``scripts/dist_train_{voc,coco}_seg_neg.py``): which
terms are on at an iteration, with which weights, and which CAM the pseudo labels come from.

A term is off while ``n_iter <= start`` (the official comparisons), and a term that is off or has weight 0 is not
computed at all.
"""
from typing import Dict

from toco_fast.config import LossConfig

LOSS_TERMS = ("cls", "cls_aux", "ptc", "ctc", "seg", "reg")


def loss_weights(cfg: LossConfig, n_iter: int) -> Dict[str, float]:
    """Weights of the terms used at iteration ``n_iter`` (0-based); terms that are off are absent."""
    weights = {"cls": cfg.w_cls, "cls_aux": cfg.w_cls_aux}
    if n_iter > cfg.contrast_start_iter:
        weights.update(ptc=cfg.w_ptc, ctc=cfg.w_ctc)
    if n_iter > cfg.seg_start_iter:
        weights.update(seg=cfg.w_seg, reg=cfg.w_reg)
    return {name: w for name, w in weights.items() if w != 0.0}


def pseudo_label_cam(cfg: LossConfig, n_iter: int) -> str:
    """Which CAM the segmentation pseudo labels come from at ``n_iter``: ``"aux"`` or ``"final"``."""
    return "aux" if n_iter <= cfg.aux_pseudo_label_until else "final"
