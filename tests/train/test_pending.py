"""The deferred host reads of the loop: queued iterations read in order with one transfer, an update skipped on the
device flag, and a loop that reads the device only at its sync points yet stops at the right iteration."""
import pytest
import torch

from toco_fast.io.checkpoint import list_checkpoints, load_checkpoint
from toco_fast.train import loop, step as step_module, update as update_module
from toco_fast.train.finite import NonFiniteLossError
from toco_fast.train.optim import build_optimizer, skips_on_device, step_unless
from toco_fast.train.pending import PendingSteps, step_record
from train_helpers import tiny_cfg


def test_pending_steps_are_read_in_order_with_their_names_and_flags():
    pending = PendingSteps()
    pending.add(step_record(1, torch.tensor(1.5), {"cls": torch.tensor(0.5)}, torch.tensor(1.0), False))
    pending.add(step_record(2, torch.tensor(float("nan")), {"cls": torch.tensor(0.25), "ptc": torch.tensor(2.0)},
                            torch.tensor(0.0), True))
    first, second = pending.read()
    assert len(pending) == 0 and pending.read() == []
    assert (first.iteration, first.values, first.grads_finite, first.stop_requested) == (
        1, {"loss": 1.5, "cls": 0.5}, True, False)
    assert second.iteration == 2 and list(second.values) == ["loss", "cls", "ptc"]
    assert second.values["ptc"] == 2.0 and second.values["loss"] != second.values["loss"]
    assert not second.grads_finite and second.stop_requested


@pytest.mark.parametrize("loss,grads_ok,expected", [(1.0, 1.0, True), (float("nan"), 1.0, False),
                                                    (float("inf"), 1.0, False), (1.0, 0.5, False)])
def test_a_record_is_finite_only_with_finite_values_and_gradients_on_every_process(loss, grads_ok, expected):
    record = step_record(1, torch.tensor(loss), {"cls": torch.tensor(0.5)}, torch.tensor(grads_ok), True)
    assert bool(record.all_finite()) is expected  # the stop flag is not a value


def _fused_adamw_pair():
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.01, fused=True) for m in models]
    return models, optimizers


def test_step_unless_skips_exactly_on_the_flag_and_steps_normally_otherwise():
    models, optimizers = _fused_adamw_pair()
    assert skips_on_device(optimizers[0]) and not skips_on_device(torch.optim.AdamW(models[0].parameters()))
    for flag in (0.0, 1.0, 0.0):
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            model(torch.randn(5, 4, generator=torch.Generator().manual_seed(int(flag) + 1))).square().sum().backward()
        before = {k: v.clone() for k, v in models[0].state_dict().items()}
        moments = [{k: v.clone() for k, v in s.items()} for s in optimizers[0].state.values()]
        step_unless(optimizers[0], torch.tensor(flag))
        if flag:  # nothing moved: weights, moments, step counts
            assert all(torch.equal(before[k], v) for k, v in models[0].state_dict().items())
            for saved, state in zip(moments, optimizers[0].state.values()):
                assert all(torch.equal(saved[k], state[k]) for k in saved)
        else:
            optimizers[1].step()
            assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))
    assert not hasattr(optimizers[0], "found_inf") and not hasattr(optimizers[0], "grad_scale")


def test_the_default_optimizer_is_fused_on_the_cpu_too(synthetic_root):
    model = torch.nn.Linear(4, 3)
    model.param_groups = lambda lr, weight_decay: [{"params": list(model.parameters()), "lr": lr,
                                                     "weight_decay": weight_decay}]
    optimizer, _ = build_optimizer(model, tiny_cfg(synthetic_root))
    assert optimizer.defaults["fused"] and skips_on_device(optimizer)
    plain, _ = build_optimizer(model, tiny_cfg(synthetic_root), fused=False)
    assert not plain.defaults["fused"] and not plain.defaults["foreach"] and not skips_on_device(plain)


@pytest.fixture
def unfused_optimizer(monkeypatch):
    """The loop with the for-loop AdamW (a device without torch's fused kernel): no update can be skipped on the
    device, so the loop reads every iteration before its update."""
    monkeypatch.setattr(loop, "build_optimizer", lambda model, cfg: build_optimizer(model, cfg, fused=False))


def _count_reads(monkeypatch):
    reads = []
    real = PendingSteps.read

    def counted(self):
        reads.append(len(self))
        return real(self)

    monkeypatch.setattr(PendingSteps, "read", counted)
    return reads


def test_the_loop_reads_the_device_only_at_sync_points(synthetic_root, tmp_path, monkeypatch):
    reads = _count_reads(monkeypatch)
    cfg = tiny_cfg(synthetic_root, "eval.enabled=false", "train.log_iters=3", "train.ckpt_iters=6")
    result = loop.train(cfg, run_dir=str(tmp_path / "deferred"))
    assert result.iteration == 6 and reads == [3, 3]  # log lines at 3 and 6, nothing read in between
    deferred = load_checkpoint(tmp_path / "deferred")

    reads.clear()
    loop.train(tiny_cfg(synthetic_root, "eval.enabled=false", "train.log_iters=1", "train.ckpt_iters=6"),
               run_dir=str(tmp_path / "every"))
    assert reads == [1] * 6
    every = load_checkpoint(tmp_path / "every")
    assert all(torch.equal(v, every["model"][k]) for k, v in deferred["model"].items())
    log = (tmp_path / "deferred" / "train.log").read_text()
    assert "iter 3/6 | loss" in log and "iter 6/6 | loss" in log


def _poison_gradients_of_iteration_5(monkeypatch):
    real = step_module.train_step

    def poisoned_gradients(*args, n_iter, **kwargs):
        loss, terms = real(*args, n_iter=n_iter, **kwargs)
        if n_iter == 4:  # iteration 5
            loss.register_hook(lambda grad: grad * float("nan"))
        return loss, terms

    monkeypatch.setattr(step_module, "train_step", poisoned_gradients)


def test_non_finite_gradients_are_skipped_on_the_device_and_reported_at_the_next_sync(
        synthetic_root, tmp_path, monkeypatch):
    _poison_gradients_of_iteration_5(monkeypatch)
    updated = []
    real_step_unless = update_module.step_unless

    def watched(optimizer, skip):
        updated.append(float(skip))
        real_step_unless(optimizer, skip)

    monkeypatch.setattr(update_module, "step_unless", watched)
    reads = _count_reads(monkeypatch)
    cfg = tiny_cfg(synthetic_root, "eval.enabled=false", "train.ckpt_iters=2", "train.log_iters=2")
    with pytest.raises(NonFiniteLossError) as info:
        loop.train(cfg, run_dir=str(tmp_path))
    assert info.value.iteration == 5 and info.value.terms == ["gradients"]
    assert updated == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # iteration 5's update was skipped by the kernel
    assert reads == [2, 2, 2]  # found when iterations 5 and 6 were read
    assert [it for it, _ in list_checkpoints(tmp_path)] == [2, 4]
    state = load_checkpoint(tmp_path)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())



def test_without_a_fused_optimizer_the_loop_reads_every_iteration_and_stops_before_the_update(
        synthetic_root, tmp_path, monkeypatch, unfused_optimizer):
    _poison_gradients_of_iteration_5(monkeypatch)
    reads = _count_reads(monkeypatch)
    cfg = tiny_cfg(synthetic_root, "eval.enabled=false", "train.ckpt_iters=2", "train.log_iters=3")
    with pytest.raises(NonFiniteLossError) as info:
        loop.train(cfg, run_dir=str(tmp_path))
    assert info.value.iteration == 5 and info.value.terms == ["gradients"]
    assert [n for n in reads if n] == [1] * 5  # each read before its update; iteration 5 raised before its own
    assert [it for it, _ in list_checkpoints(tmp_path)] == [2, 4]


@pytest.mark.cuda
@pytest.mark.parametrize("n_iter", [0, 5])  # contrast only / every term (seg, reg, PAR from iteration 1)
def test_a_fused_iteration_on_cuda_never_waits_for_the_device(synthetic_root, n_iter):
    from toco_fast.data import sample_keys
    from toco_fast.losses.energy import build_energy_loss
    from toco_fast.model.factory import build_model
    from train_helpers import fixed_batch

    cfg = tiny_cfg(synthetic_root)
    device = torch.device("cuda")
    cpu = fixed_batch(cfg)
    raw = {"image": cpu.images, "cls_label": cpu.cls_labels, "img_box": cpu.img_box, "view2": cpu.view2,
           "local_source": cpu.local_source}
    raw = {key: value.pin_memory() for key, value in raw.items()}
    model = build_model(cfg.model).to(device).train()
    optimizer, schedule = build_optimizer(model, cfg)
    energy = build_energy_loss(cfg.loss)
    assert skips_on_device(optimizer)
    guarded = update_module.GuardedUpdate(optimizer)

    def iteration():
        batch = loop.TrainBatch.from_loader(raw, device, rng_keys=sample_keys(0, n_iter, range(2)))
        schedule.apply(n_iter)
        loss, terms = step_module.train_step(model, batch, cfg=cfg, n_iter=n_iter, energy=energy)
        guarded.apply(n_iter + 1, loss, terms, stop_requested=False)

    iteration()  # first calls: kernel compilation, allocator warm-up, cached device tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any operation that waits for the device raises
    try:
        iteration()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    reports = guarded.take()  # the one read, after the region
    assert len(reports) == 2 and all(r.grads_finite and list(r.values)[0] == "loss" for r in reports)
