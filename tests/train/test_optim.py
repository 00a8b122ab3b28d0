"""The learning-rate schedule against the official PolyWarmupAdamW rule."""
import pytest
import torch

from toco_fast.config import load_config
from toco_fast.train.optim import PolyWarmupSchedule, poly_warmup_multiplier


class OfficialPolyWarmup:
    """The official PolyWarmupAdamW learning-rate rule (rulixiang/ToCo utils/optimizer.py), step by step."""

    def __init__(self, init_lrs, warmup_iter, max_iter, warmup_ratio, power):
        self.init_lrs, self.warmup_iter, self.max_iter = init_lrs, warmup_iter, max_iter
        self.warmup_ratio, self.power = warmup_ratio, power
        self.global_step = 0
        self.lrs = list(init_lrs)

    def step(self):
        if self.global_step < self.warmup_iter:
            mult = 1 - (1 - self.global_step / self.warmup_iter) * (1 - self.warmup_ratio)
            self.lrs = [lr * mult for lr in self.init_lrs]
        elif self.global_step < self.max_iter:
            mult = (1 - self.global_step / self.max_iter) ** self.power
            self.lrs = [lr * mult for lr in self.init_lrs]
        self.global_step += 1
        return self.lrs


@pytest.mark.parametrize("name", ["voc_vit_b", "coco_vit_b"])
def test_lr_schedule_matches_official(name):
    cfg = load_config(name)
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": cfg.optim.lr},
                                   {"params": [params[1]], "lr": 10 * cfg.optim.lr}])
    ours = PolyWarmupSchedule(optimizer, warmup_iters=cfg.optim.warmup_iters,
                                       max_iters=cfg.train.max_iters, warmup_ratio=cfg.optim.warmup_ratio,
                                       power=cfg.optim.power)
    official = OfficialPolyWarmup([cfg.optim.lr, 10 * cfg.optim.lr], cfg.optim.warmup_iters, cfg.train.max_iters,
                                  cfg.optim.warmup_ratio, cfg.optim.power)
    key = {0, 1, 2, 749, 1499, 1500, 1501, 2000, cfg.train.max_iters // 2, cfg.train.max_iters - 1}
    for step in range(cfg.train.max_iters + 3):
        expected = official.step()
        if step in key or step >= cfg.train.max_iters:
            ours.apply(step)
            assert [g["lr"] for g in optimizer.param_groups] == expected, step
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * (1 / cfg.train.max_iters) ** 0.9)


def test_lr_schedule_values():
    mult = poly_warmup_multiplier
    kw = dict(warmup_iters=1500, max_iters=20000, warmup_ratio=1e-6, power=0.9)
    assert mult(0, **kw) == pytest.approx(1e-6)
    assert mult(750, **kw) == pytest.approx(0.5 + 0.5e-6)
    assert mult(1500, **kw) == pytest.approx((1 - 1500 / 20000) ** 0.9)  # poly counts from 0: a drop at 1500
    with pytest.raises(ValueError, match="step"):
        mult(-1, **kw)
