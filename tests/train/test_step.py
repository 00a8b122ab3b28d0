"""The training step: it learns on a fixed batch, computes exactly the terms that are on (and nothing only an off term
needs), and the reg term joins when its loss layer is given."""
import pytest
import torch

from toco_fast.losses.energy import build_energy_loss
from toco_fast.model.factory import build_model
from toco_fast.train import loop, step as step_module
from toco_fast.train.optim import build_optimizer
from toco_fast.train.step import train_step
from train_helpers import NUM_CLASSES, SIZE, fixed_batch, tiny_cfg


def test_overfit_fixed_batch(synthetic_root):
    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "optim.lr=1e-3")
    model = build_model(cfg.model).train()
    optimizer, sched = build_optimizer(model, cfg)
    batch = fixed_batch(cfg)
    losses = []
    for n_iter in range(20):
        sched.apply(100)  # past the warm-up
        torch.manual_seed(0)  # the same local crops every step: a truly fixed batch
        loss, terms = train_step(model, batch, cfg=cfg, n_iter=n_iter)
        assert set(terms) == {"cls", "cls_aux", "ptc", "ctc", "seg"}  # reg: no extension in CI
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def _spy(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


@pytest.fixture
def spied(monkeypatch):
    """Record the step's calls of everything a loss term needs."""
    calls = []
    for name in ("multi_scale_cam", "crop_from_roi", "cam_to_roi_mask", "token_labels_from_cam",
                 "refine_cams_with_bkg", "ctc_loss", "seg_loss", "ptc_loss"):
        _spy(monkeypatch, step_module, name, calls)
    return calls


@pytest.mark.parametrize("overrides, n_iter, expected_terms, expected_calls", [
    # cls-only baseline before the seg start: no CAM, no crops, no PAR, no contrast
    (["loss.w_ptc=0", "loss.w_ctc=0", "loss.seg_start_iter=5"], 5, {"cls", "cls_aux"}, set()),
    # baseline after the seg start: CAM + PAR + seg, still no contrast and no local crops
    (["loss.w_ptc=0", "loss.w_ctc=0", "loss.seg_start_iter=5"], 6, {"cls", "cls_aux", "seg"},
     {"multi_scale_cam", "refine_cams_with_bkg", "seg_loss"}),
    # COCO-like: contrast off until its start, seg on
    (["loss.contrast_start_iter=10", "loss.seg_start_iter=0"], 10, {"cls", "cls_aux", "seg"},
     {"multi_scale_cam", "refine_cams_with_bkg", "seg_loss"}),
    # everything on except seg (weight 0)
    (["loss.w_seg=0", "loss.seg_start_iter=-1"], 0, {"cls", "cls_aux", "ptc", "ctc"},
     {"multi_scale_cam", "cam_to_roi_mask", "crop_from_roi", "ctc_loss", "token_labels_from_cam", "ptc_loss"}),
])
def test_terms_that_are_off_are_not_computed(synthetic_root, spied, overrides, n_iter, expected_terms,
                                             expected_calls):
    cfg = tiny_cfg(synthetic_root, *overrides)
    model = build_model(cfg.model).train()
    seen_views = []
    real_global, real_projections = model.forward_global, model.forward_projections

    def forward_global(images, view2=None):
        seen_views.append(("global", view2 is not None))
        return real_global(images, view2)

    def forward_projections(global_cls, local_crops=None):
        seen_views.append(("local", local_crops is not None))
        return real_projections(global_cls, local_crops)

    model.forward_global, model.forward_projections = forward_global, forward_projections
    teacher_before = [p.clone() for p in model.proj_head_t.parameters()]
    with torch.no_grad():
        for p in model.proj_head.parameters():
            p.add_(0.1)
    _, terms = train_step(model, fixed_batch(cfg), cfg=cfg, n_iter=n_iter)
    assert set(terms) == expected_terms
    assert set(spied) == expected_calls
    contrast = "ctc" in expected_terms
    assert seen_views == ([("global", True), ("local", True)] if contrast else [("global", False)])
    teacher_moved = any(not torch.equal(a, b) for a, b in zip(teacher_before, model.proj_head_t.parameters()))
    assert teacher_moved  # the EMA runs every iteration, as the official forward does, CTC on or not


def test_training_refuses_to_start_without_the_extension_when_reg_is_on(synthetic_root, monkeypatch, tmp_path):
    from toco_fast.config import ConfigError
    from toco_fast.ops import extension as extension_module

    def missing():
        raise ImportError("cannot import name '_C'")

    monkeypatch.setattr(extension_module, "_load", missing)
    with pytest.raises(RuntimeError, match="toco_fast._C extension is not available.*pip install"):
        build_energy_loss(tiny_cfg(synthetic_root).loss)
    assert build_energy_loss(tiny_cfg(synthetic_root, "loss.w_reg=0").loss) is None  # weight 0: not needed
    with pytest.raises(ConfigError, match=r"loss.w_reg=0.05: .*pip install.*--set loss.w_reg=0"):
        loop.train(tiny_cfg(synthetic_root), run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_reg_term_is_used_when_given(synthetic_root, monkeypatch):
    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "loss.w_ptc=0", "loss.w_ctc=0")
    model = build_model(cfg.model).train()
    calls = []

    def energy_loss(images, seg_logits, labels, img_box, layer):
        calls.append((tuple(images.shape), tuple(seg_logits.shape), tuple(labels.shape), layer))
        return (seg_logits.float() ** 2).mean()

    monkeypatch.setattr(step_module, "energy_loss", energy_loss)
    layer = object()
    loss, terms = train_step(model, fixed_batch(cfg), cfg=cfg, n_iter=0, energy=layer)
    assert set(terms) == {"cls", "cls_aux", "seg", "reg"}
    assert calls == [((2, 3, SIZE, SIZE), (2, NUM_CLASSES, SIZE, SIZE), (2, SIZE, SIZE), layer)]
    expected = terms["cls"] + terms["cls_aux"] + 0.1 * terms["seg"] + 0.05 * terms["reg"]
    torch.testing.assert_close(loss.detach(), expected)


def test_real_energy_term_when_built(synthetic_root):
    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "loss.w_ptc=0", "loss.w_ctc=0")
    try:
        energy = build_energy_loss(cfg.loss)
    except RuntimeError:
        pytest.skip("toco_fast._C is not built")
    model = build_model(cfg.model).train()
    loss, terms = train_step(model, fixed_batch(cfg), cfg=cfg, n_iter=0, energy=energy)
    assert set(terms) == {"cls", "cls_aux", "seg", "reg"} and torch.isfinite(terms["reg"])
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.decoder.parameters())


def test_ratio_losses_are_per_group_of_samples(synthetic_root):
    """With loss.group_size=2, PTC and seg on a batch of 4 are the mean of the two 2-sample losses (the official
    per-GPU ratios averaged by DDP), not one ratio over 4 samples."""
    cfg = tiny_cfg(synthetic_root, "data.batch_size=4", "loss.seg_start_iter=-1", "loss.w_reg=0", "loss.w_ctc=0")
    model = build_model(cfg.model).train()
    batch = fixed_batch(cfg)

    def halves(start):
        return type(batch)(**{name: getattr(batch, name)[start:start + 2] for name in
                              ("images", "cls_labels", "img_box", "view2", "local_source")})

    _, grouped = train_step(model, batch, cfg=cfg, n_iter=0)
    per_half = [train_step(model, halves(start), cfg=cfg, n_iter=0)[1] for start in (0, 2)]
    for name in ("ptc", "seg"):
        torch.testing.assert_close(grouped[name], (per_half[0][name] + per_half[1][name]) / 2, rtol=1e-5, atol=1e-6)
    whole = train_step(model, batch, cfg=tiny_cfg(synthetic_root, "data.batch_size=4", "loss.seg_start_iter=-1",
                                                  "loss.w_reg=0", "loss.w_ctc=0", "loss.group_size=4"), n_iter=0)[1]
    assert not torch.allclose(whole["ptc"], grouped["ptc"])


def _model_pair(cfg):
    """Two tiny models with the same weights."""
    torch.manual_seed(0)
    first = build_model(cfg.model).train()
    second = build_model(cfg.model).train()
    second.load_state_dict(first.state_dict())
    return first, second


def _terms_grads_saved(model, batch, cfg):
    """One step's loss terms, its gradients, and how many tensors autograd kept for the backward."""
    torch.manual_seed(3)  # the same local crops
    saved = [0]

    def pack(tensor):
        saved[0] += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, terms = train_step(model, batch, cfg=cfg, n_iter=0)
    loss.backward()
    return terms, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, saved[0]


def _assert_same_step(a, b, term_rtol, term_atol, grad_rtol):
    (terms_a, grads_a, _), (terms_b, grads_b, _) = a, b
    for name in terms_a:
        torch.testing.assert_close(terms_b[name], terms_a[name], rtol=term_rtol, atol=term_atol, msg=name)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=grad_rtol, atol=1e-7, msg=name)


def test_activation_checkpointing_keeps_losses_gradients_and_names(synthetic_root):
    from toco_fast.parallel.wrap import checkpoint_blocks

    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "loss.w_reg=0")
    plain, checkpointed = _model_pair(cfg)
    checkpoint_blocks(checkpointed.encoder.blocks)
    checkpoint_blocks(checkpointed.encoder.blocks)  # applying twice changes nothing
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    batch = fixed_batch(cfg)
    eager, recomputed = (_terms_grads_saved(m, batch, cfg) for m in (plain, checkpointed))
    assert recomputed[2] < eager[2]  # the blocks' activations are recomputed, not kept
    _assert_same_step(eager, recomputed, term_rtol=1e-6, term_atol=1e-7, grad_rtol=1e-5)


def test_compiled_model_gives_the_eager_losses_and_gradients(synthetic_root):
    from torch._dynamo.backends.registry import lookup_backend

    from toco_fast.parallel.wrap import compile_model

    graphs = []

    def recording_aot_eager(gm, example_inputs):  # the traced graphs, without C++ code generation
        graphs.append(str(gm.graph))
        return lookup_backend("aot_eager")(gm, example_inputs)

    cfg = tiny_cfg(synthetic_root, "loss.seg_start_iter=-1", "loss.w_reg=0")
    eager, compiled = _model_pair(cfg)
    compile_model(compiled, backend=recording_aot_eager)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    batch = fixed_batch(cfg)
    results = [_terms_grads_saved(m, batch, cfg) for m in (eager, compiled)]
    # Blocks (attention), the decoder (dilated convolutions) and the heads (normalise + weight norm) ran compiled.
    assert any("scaled_dot_product_attention" in g for g in graphs)
    assert any("conv2d" in g for g in graphs)
    assert any("normalize" in g for g in graphs) and any("_weight_norm" in g for g in graphs)
    _assert_same_step(*results, term_rtol=1e-5, term_atol=1e-6, grad_rtol=1e-4)
