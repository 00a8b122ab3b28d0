"""Learning-rate and loss-weight schedules of the official ToCo training scripts.

Learning rate (``PolyWarmupAdamW`` in rulixiang/ToCo ``utils/optimizer.py``): the optimizer step with 0-based index
``step`` uses ``base_lr * m(step)`` with

    m(step) = 1 - (1 - step / warmup_iters) * (1 - warmup_ratio)      if step < warmup_iters   (linear warm-up)
    m(step) = (1 - step / max_iters) ** power                          if step < max_iters      (poly)

and past ``max_iters`` the last rate is kept. The poly part counts from 0, not from the end of the warm-up, so the
rate drops from ~1 to (1 - warmup_iters / max_iters) ** power at the boundary, exactly as in the official code.

Loss weights (``scripts/dist_train_{voc,coco}_seg_neg.py``): a term is off while ``n_iter <= start`` (the official
comparisons), and a term that is off or has weight 0 is not computed at all.
"""
from typing import Dict, List

import torch

from toco_fast.config import LossConfig

LOSS_TERMS = ("cls", "cls_aux", "ptc", "ctc", "seg", "reg")


def poly_warmup_multiplier(step: int, *, warmup_iters: int, max_iters: int, warmup_ratio: float,
                           power: float) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based), as in the official PolyWarmupAdamW."""
    if step < 0:
        raise ValueError(f"step: expected >= 0, got {step}")
    if max_iters <= 0:
        raise ValueError(f"max_iters: expected > 0, got {max_iters}")
    step = min(step, max_iters - 1)
    if step < warmup_iters:
        return 1 - (1 - step / warmup_iters) * (1 - warmup_ratio)
    return (1 - step / max_iters) ** power


class PolyWarmupSchedule:
    """Sets every param group's ``lr`` to ``initial_lr * poly_warmup_multiplier(step)`` before an optimizer step.

    The rate is a pure function of the iteration, so resuming needs only ``initial_lr`` (kept in the param groups
    and in ``state_dict``) and the iteration; a step skipped by the fp16 GradScaler does not shift the schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, warmup_iters: int, max_iters: int,
                 warmup_ratio: float, power: float):
        self.optimizer = optimizer
        self.warmup_iters = warmup_iters
        self.max_iters = max_iters
        self.warmup_ratio = warmup_ratio
        self.power = power
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    @property
    def base_lrs(self) -> List[float]:
        return [group["initial_lr"] for group in self.optimizer.param_groups]

    def multiplier(self, step: int) -> float:
        return poly_warmup_multiplier(step, warmup_iters=self.warmup_iters, max_iters=self.max_iters,
                                      warmup_ratio=self.warmup_ratio, power=self.power)

    def apply(self, step: int) -> float:
        """Set the rates for optimizer step ``step``; returns the multiplier."""
        mult = self.multiplier(step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * mult
        return mult

    def state_dict(self) -> Dict[str, object]:
        return {"base_lrs": self.base_lrs, "warmup_iters": self.warmup_iters, "max_iters": self.max_iters,
                "warmup_ratio": self.warmup_ratio, "power": self.power}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore the base rates. The shape of the schedule (warm-up, length, power) stays the one this object
        was built with, i.e. the current config: a resumed run may be given a new ``max_iters``."""
        base_lrs = list(state["base_lrs"])
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"state['base_lrs']: {len(base_lrs)} rates for "
                             f"{len(self.optimizer.param_groups)} param groups")
        for group, lr in zip(self.optimizer.param_groups, base_lrs):
            group["initial_lr"] = lr


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
