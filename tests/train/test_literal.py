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


def _both_steps(root, overrides, n_iter, dtype):
    """The fused and the literal step on the same ``dtype`` model and batch: ``(models, fused, literal)``, each
    result ``(loss, terms, grads)``."""
    cfg = tiny_cfg(root, *overrides)
    try:
        energy = build_energy_loss(cfg.loss)
    except RuntimeError:
        pytest.skip("toco_fast._C is not built")
    batch = fixed_batch(cfg)
    batch = dataclasses.replace(batch, images=batch.images.to(dtype), view2=batch.view2.to(dtype),
                                local_source=batch.local_source.to(dtype))
    torch.manual_seed(0)
    fused_model = build_model(cfg.model).train().to(dtype)
    literal_model = copy.deepcopy(fused_model)
    return ((fused_model, literal_model), _run(train_step, fused_model, batch, cfg, n_iter, energy),
            _run(literal_train_step, literal_model, batch, cfg, n_iter, energy))


def _assert_same_grads(fused_grads, literal_grads, rtol):
    for name, grad in literal_grads.items():
        scale = max(float(grad.abs().max()), 1e-12)
        torch.testing.assert_close(fused_grads[name], grad, rtol=rtol, atol=rtol * scale, msg=name)


@pytest.mark.parametrize("phase, overrides, n_iter, computed", PHASES, ids=[p[0] for p in PHASES])
def test_fused_step_equals_literal_step(synthetic_root, phase, overrides, n_iter, computed):
    models, fused, literal = _both_steps(synthetic_root, overrides, n_iter, torch.float32)
    (fused_loss, fused_terms, fused_grads), (literal_loss, literal_terms, literal_grads) = fused, literal

    assert set(fused_terms) == computed
    assert set(literal_terms) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg"}  # the official computes all
    for name in computed:
        torch.testing.assert_close(fused_terms[name], literal_terms[name], rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(fused_loss, literal_loss, rtol=1e-5, atol=1e-7)
    _assert_same_grads(fused_grads, literal_grads, rtol=1e-5)
    for a, b in zip(models[0].proj_head_t.parameters(), models[1].proj_head_t.parameters()):
        assert torch.equal(a, b)  # the same EMA update


@pytest.mark.parametrize("phase, overrides, n_iter, computed", [PHASES[1], PHASES[3]],
                         ids=[PHASES[1][0], PHASES[3][0]])
def test_float64_steps_keep_float64_and_agree_tightly(synthetic_root, phase, overrides, n_iter, computed):
    """A float64 model and batch: every term but ``reg`` (the official float32 lattice) is computed in float64, and
    the fused and literal steps agree to float64 rounding where fp32 would only give ~1e-6."""
    _, (_, fused_terms, fused_grads), (_, literal_terms, literal_grads) = _both_steps(
        synthetic_root, overrides, n_iter, torch.float64)

    assert set(fused_terms) == computed
    assert {name: value.dtype for name, value in fused_terms.items()} == {
        name: torch.float32 if name == "reg" else torch.float64 for name in computed}
    for name in computed:
        tolerance = dict(rtol=1e-6, atol=1e-9) if name == "reg" else dict(rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fused_terms[name], literal_terms[name], **tolerance, msg=name)
    _assert_same_grads(fused_grads, literal_grads, rtol=1e-8)


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
