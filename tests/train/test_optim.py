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


def _idle_then_active_run(cfg, batch, idle_steps, active_steps, mode):
    """Train a fresh tiny model for ``idle_steps`` with seg off, then ``active_steps`` with seg on; returns the
    model and optimizer. ``mode``: "zero_grad" (our fill), "official" (the reference: seg kept in the graph with
    weight 0.0, as the official loss), "skip" (idle parameters left without gradient)."""
    from toco_fast.model.factory import build_model
    from toco_fast.train.optim import build_optimizer, fill_idle_grads
    from toco_fast.train.step import train_step

    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    optimizer, schedule = build_optimizer(model, cfg)
    seg_logits = []
    real_forward_global = model.forward_global

    def forward_global(*args, **kwargs):
        out, global_cls = real_forward_global(*args, **kwargs)
        seg_logits.append(out.seg_logits)
        return out, global_cls

    model.forward_global = forward_global
    for n_iter in range(idle_steps + active_steps):
        schedule.apply(n_iter)
        torch.manual_seed(100 + n_iter)  # the same local crops in both runs
        seg_logits.clear()
        loss, _ = train_step(model, batch, cfg=cfg, n_iter=n_iter)
        idle = n_iter <= cfg.loss.seg_start_iter
        if mode == "official" and idle:
            loss = loss + 0.0 * seg_logits[0].float().sum()  # the decoder in the graph, weighted 0.0
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if mode == "zero_grad":
            fill_idle_grads(optimizer)
        optimizer.step()
    return model, optimizer


def test_idle_parameters_follow_the_official_zero_weight_pattern(tmp_path):
    from toco_fast.data import generate_synthetic
    from train_helpers import fixed_batch, tiny_cfg

    root = str(tmp_path / "syn")
    generate_synthetic(root, num_train=4, num_val=1, num_classes=4, size=64, seed=0)
    idle, active = 3, 2
    cfg = tiny_cfg(root, f"loss.seg_start_iter={idle - 1}", "loss.w_ptc=0", "loss.w_ctc=0", "loss.w_reg=0",
                   "optim.warmup_iters=0", "optim.lr=1e-3")
    batch = fixed_batch(cfg)
    ours, ours_opt = _idle_then_active_run(cfg, batch, idle, active, "zero_grad")
    ref, ref_opt = _idle_then_active_run(cfg, batch, idle, active, "official")
    for (name, p), q in zip(ours.decoder.named_parameters(), ref.decoder.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=f"decoder {name}")
        ours_state, ref_state = ours_opt.state[p], ref_opt.state[q]
        assert float(ours_state["step"]) == float(ref_state["step"]) == idle + active
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours_state[key], ref_state[key], rtol=1e-5, atol=1e-12, msg=f"{name} {key}")
    # "skip": the decoder gets no AdamW state (no decay, no step count) until seg switches on.
    skipped, skipped_opt = _idle_then_active_run(cfg, batch, idle, active, "skip")
    decoder = list(skipped.decoder.parameters())
    assert all(float(skipped_opt.state[p]["step"]) == active for p in decoder)
    assert any(not torch.allclose(p, q) for p, q in zip(decoder, ref.decoder.parameters()))



def test_the_fused_default_updates_as_the_official_per_parameter_adamw():
    """Five steps of the fused kernel (the default on CPU and CUDA) against torch 1.10's per-parameter AdamW loop
    (``fused=False``), the heads' 10x rate, weight decay and frozen parameters included: the same weights and
    moments to fp32 rounding."""
    from toco_fast.model.factory import build_model
    from toco_fast.train.optim import build_optimizer
    from train_helpers import tiny_cfg

    cfg = tiny_cfg("unused", "optim.lr=1e-3", "optim.warmup_iters=0")
    torch.manual_seed(0)
    models = [build_model(cfg.model), build_model(cfg.model)]
    models[1].load_state_dict(models[0].state_dict())
    runs = [(model, *build_optimizer(model, cfg, fused=fused)) for model, fused in zip(models, (None, False))]
    assert runs[0][1].defaults["fused"] and not runs[1][1].defaults["fused"]
    generator = torch.Generator().manual_seed(1)
    for step in range(5):
        grads = [torch.randn(p.shape, generator=generator) for p in models[0].parameters()]
        for model, optimizer, schedule in runs:
            schedule.apply(step)
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone() if p.requires_grad else None
            optimizer.step()
    (fused_model, fused, _), (plain_model, plain, _) = runs
    for (name, p), q in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=name)
        if p.requires_grad:
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(fused.state[p][key], plain.state[q][key], rtol=1e-5, atol=1e-12,
                                           msg=f"{name} {key}")
