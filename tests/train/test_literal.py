"""The fused step equals the literal (official-structure) step: same loss terms and gradients in every phase of the
VOC and COCO schedules (fp32, CPU, tiny ViT)."""
import copy
import dataclasses

import pytest
import torch

from toco_fast.losses.energy import build_energy_loss
from toco_fast.model.factory import build_model
from toco_fast.train.literal import literal_train_step
from toco_fast.train.module import TrainStepModule
from toco_fast.train.step import train_step
from train_helpers import fixed_batch, tiny_cfg

# Schedules in miniature: VOC (contrast from the start, seg/reg after iteration 1) and COCO (cls only until 1,
# seg/reg from the aux CAM until 3, then contrast on and pseudo labels from the final CAM).
VOC = ["loss.seg_start_iter=1"]
COCO = ["loss.seg_start_iter=1", "loss.contrast_start_iter=3", "loss.aux_pseudo_label_until=3"]
PHASES = [("voc: contrast, no seg", VOC, 0, {"cls", "cls_aux", "ptc", "ctc"}),
          ("voc: everything", VOC, 2, {"cls", "cls_aux", "ptc", "ctc", "seg", "reg"}),
          ("coco: cls only", COCO, 0, {"cls", "cls_aux"}),
          ("coco: seg from the aux CAM", COCO, 2, {"cls", "cls_aux", "seg", "reg"}),
          ("coco: everything", COCO, 4, {"cls", "cls_aux", "ptc", "ctc", "seg", "reg"})]


def _run(step_fn, model, batch, cfg, n_iter, energy):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same local crops
    loss, terms = step_fn(model, batch, cfg=cfg, n_iter=n_iter, energy=energy)
    loss.backward()
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()
             if p.requires_grad}
    return loss.detach(), terms, grads


@pytest.mark.parametrize("phase, overrides, n_iter, computed", PHASES, ids=[p[0] for p in PHASES])
def test_fused_step_equals_literal_step(synthetic_root, phase, overrides, n_iter, computed):
    cfg = tiny_cfg(synthetic_root, *overrides)
    try:
        energy = build_energy_loss(cfg.loss)
    except RuntimeError:
        pytest.skip("toco_fast._C is not built")
    batch = fixed_batch(cfg)
    torch.manual_seed(0)
    fused_model = build_model(cfg.model).train()
    literal_model = copy.deepcopy(fused_model)
    fused_loss, fused_terms, fused_grads = _run(train_step, fused_model, batch, cfg, n_iter, energy)
    literal_loss, literal_terms, literal_grads = _run(literal_train_step, literal_model, batch, cfg, n_iter, energy)

    assert set(fused_terms) == computed
    assert set(literal_terms) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg"}  # the official computes all
    for name in computed:
        torch.testing.assert_close(fused_terms[name], literal_terms[name], rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(fused_loss, literal_loss, rtol=1e-5, atol=1e-7)
    for name, grad in literal_grads.items():
        scale = max(float(grad.abs().max()), 1e-12)
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
    for a, b in zip(fused_model.proj_head_t.parameters(), literal_model.proj_head_t.parameters()):
        assert torch.equal(a, b)  # the same EMA update


@pytest.mark.parametrize("phase, overrides, n_iter, computed", [PHASES[1], PHASES[3]], ids=[PHASES[1][0], PHASES[3][0]])
def test_float64_steps_keep_float64_and_agree_tightly(synthetic_root, phase, overrides, n_iter, computed):
    """A float64 model and batch: every term but ``reg`` (the official float32 lattice) is computed in float64, and
    the fused and literal steps agree to float64 rounding where fp32 would only give ~1e-6."""
    cfg = tiny_cfg(synthetic_root, *overrides)
    try:
        energy = build_energy_loss(cfg.loss)
    except RuntimeError:
        pytest.skip("toco_fast._C is not built")
    fp32 = fixed_batch(cfg)
    batch = dataclasses.replace(fp32, images=fp32.images.double(), view2=fp32.view2.double(),
                                local_source=fp32.local_source.double())
    torch.manual_seed(0)
    fused_model = build_model(cfg.model).train().double()
    literal_model = copy.deepcopy(fused_model)
    fused_loss, fused_terms, fused_grads = _run(train_step, fused_model, batch, cfg, n_iter, energy)
    literal_loss, literal_terms, literal_grads = _run(literal_train_step, literal_model, batch, cfg, n_iter, energy)

    assert set(fused_terms) == computed
    assert {name: value.dtype for name, value in fused_terms.items()} == {
        name: torch.float32 if name == "reg" else torch.float64 for name in computed}
    for name in computed:
        tolerance = dict(rtol=1e-6, atol=1e-9) if name == "reg" else dict(rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fused_terms[name], literal_terms[name].to(fused_terms[name].dtype), **tolerance,
                                   msg=name)
    for name, grad in literal_grads.items():
        scale = max(float(grad.abs().max()), 1e-12)
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-8, atol=1e-8 * scale, msg=name)


def test_step_module_runs_the_configured_step(synthetic_root, monkeypatch):
    from toco_fast.train import literal, step

    calls = []
    monkeypatch.setattr(step, "train_step", lambda model, batch, **kw: calls.append("fused"))
    monkeypatch.setattr(literal, "literal_train_step", lambda model, batch, **kw: calls.append("literal"))
    model = torch.nn.Linear(1, 1)
    TrainStepModule(model)(None)
    TrainStepModule(model, "literal")(None)
    assert calls == ["fused", "literal"]
    with pytest.raises(ValueError, match="train.step: expected one of"):
        TrainStepModule(model, "fast")
