"""The optimizer and learning-rate schedule of the official ToCo training (``PolyWarmupAdamW`` in rulixiang/ToCo
``utils/optimizer.py``).

AdamW over ``ToCo.param_groups`` (backbone lr, heads and decoder 10x); parameters idle in a phase of the schedule get
zero gradients as in the official runs (``fill_idle_grads``). The optimizer step with 0-based index
``step`` uses ``base_lr * m(step)`` with

    m(step) = 1 - (1 - step / warmup_iters) * (1 - warmup_ratio)      if step < warmup_iters   (linear warm-up)
    m(step) = (1 - step / max_iters) ** power                          if step < max_iters      (poly)

and past ``max_iters`` the last rate is kept. The poly part counts from 0, not from the end of the warm-up, so the
rate drops from ~1 to (1 - warmup_iters / max_iters) ** power at the boundary, exactly as in the official code.
"""
from typing import Dict, List, Optional, Tuple

import torch

from toco_fast.config import Config

FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # device types with torch's fused AdamW kernel (CPU: torch >= 2.4)


def build_optimizer(model: torch.nn.Module, cfg: Config,
                    fused: Optional[bool] = None) -> Tuple[torch.optim.Optimizer, "PolyWarmupSchedule"]:
    """AdamW over ``model.param_groups`` (backbone lr, heads 10x) with the official warm-up + poly schedule.

    ``fused``: None picks torch's fused kernel where the parameters' device has one (CUDA, CPU): one pass over all
    parameters instead of several per tensor, the same update rule, and an update it can skip on a device flag
    (``step_unless``); False gives the per-parameter loop of the official runs (torch 1.10's only AdamW).
    """
    groups = model.param_groups(cfg.optim.lr, cfg.optim.weight_decay)
    if fused is None:
        fused = all(p.device.type in FUSED_ADAMW_DEVICES for group in groups for p in group["params"])
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                  weight_decay=cfg.optim.weight_decay,
                                  **({"fused": True} if fused else {"foreach": False}))
    schedule = PolyWarmupSchedule(optimizer, warmup_iters=cfg.optim.warmup_iters, max_iters=cfg.train.max_iters,
                                  warmup_ratio=cfg.optim.warmup_ratio, power=cfg.optim.power)
    return optimizer, schedule


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` can skip an update on a flag that stays on the device: torch's fused Adam / AdamW read
    ``found_inf`` (the protocol ``torch.amp.GradScaler`` uses), so no host read is needed before the step."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()`` that changes nothing (parameters, moments, step counts) where ``skip`` is 1.

    ``skip``: 0-d float32 on the parameters' device, 0.0 or 1.0; decided by the kernel, without a host sync.
    Needs ``skips_on_device(optimizer)``.
    """
    optimizer.grad_scale = None
    optimizer.found_inf = skip
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf


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


def fill_idle_grads(optimizer: torch.optim.Optimizer) -> None:
    """Give every optimised parameter that the backward pass left without a gradient a zero gradient.

    The official loss keeps terms that are off in the graph with weight 0.0 (the decoder before seg starts, the
    projection head while CTC is off) and torch 1.10's ``zero_grad()`` kept zero-filled gradients, so AdamW decayed
    those parameters, updated their moments and counted their steps from the first iteration. Zero gradients here
    reproduce that without computing the idle terms (``optim.idle_params: zero_grad``).
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.requires_grad and param.grad is None:
                param.grad = torch.zeros_like(param)


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
