"""What the loop guards against: non-finite gradients of a finite loss, checkpoints of non-finite state, an
evaluation failure right after a checkpoint iteration, and a stop signal (SIGTERM) in the middle of a run."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from toco_fast.config import save_config
from toco_fast.data import DataError
from toco_fast.io.checkpoint import list_checkpoints, load_checkpoint
from toco_fast.train import loop, step as step_module
from toco_fast.train.finite import NonFiniteLossError, check_finite_state
from toco_fast.train.loop import train
from train_helpers import tiny_cfg


def test_non_finite_gradients_of_a_finite_loss_stop_before_the_update(synthetic_root, tmp_path, monkeypatch):
    real = step_module.train_step

    def poisoned_gradients(*args, n_iter, **kwargs):
        loss, terms = real(*args, n_iter=n_iter, **kwargs)
        if n_iter == 4:  # iteration 5: a finite loss whose backward yields NaN (what an lr of 10 produced)
            loss.register_hook(lambda grad: grad * float("nan"))
        return loss, terms

    monkeypatch.setattr(step_module, "train_step", poisoned_gradients)
    with pytest.raises(NonFiniteLossError) as info:
        train(tiny_cfg(synthetic_root, "eval.enabled=false", "train.ckpt_iters=2"), run_dir=str(tmp_path))
    assert info.value.iteration == 5 and info.value.terms == ["gradients"]
    assert "non-finite gradients at iteration 5" in str(info.value)
    assert [it for it, _ in list_checkpoints(tmp_path)] == [2, 4]
    state = load_checkpoint(tmp_path)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_no_checkpoint_of_non_finite_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    check_finite_state(model, optimizer, "ok.pt")  # finite: no error
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match=r"iter_7.pt: not written, .*non-finite values .*weight"):
        check_finite_state(model, optimizer, "iter_7.pt")
    with torch.no_grad():
        model.weight.zero_()
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    optimizer.state[model.bias]["exp_avg"][0] = float("inf")
    with pytest.raises(RuntimeError, match="optimizer state exp_avg"):
        check_finite_state(model, optimizer, "iter_8.pt")


def test_checkpoint_is_written_before_a_failing_evaluation(synthetic_root, tmp_path, monkeypatch):
    def broken_validation(*args, **kwargs):
        raise DataError("val_000001.png: cannot read image")

    monkeypatch.setattr(loop, "validate", broken_validation)
    with pytest.raises(DataError):
        train(tiny_cfg(synthetic_root), run_dir=str(tmp_path))  # evaluation at iteration 3
    assert [it for it, _ in list_checkpoints(tmp_path)] == [3]


def test_sigterm_writes_a_checkpoint_of_the_last_iteration_and_exits_cleanly(synthetic_root, tmp_path):
    cfg = tiny_cfg(synthetic_root, "train.max_iters=100000", "train.ckpt_iters=100000", "train.log_iters=1",
                   "eval.enabled=false")
    config_file = tmp_path / "cfg.yaml"
    save_config(cfg, str(config_file))
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "toco_fast.train", "--config", str(config_file),
                                "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    lines = []
    deadline = time.monotonic() + 120
    for line in process.stdout:  # wait for the second logged iteration
        lines.append(line)
        if line.startswith("iter 2/") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    text = "".join(lines) + output
    assert process.returncode == 128 + signal.SIGTERM, text
    assert "Traceback" not in text
    assert "stopped by SIGTERM after iteration" in text and f"--resume {run_dir}" in text
    iterations = [it for it, _ in list_checkpoints(run_dir)]
    assert len(iterations) == 1 and iterations[0] >= 2
    assert load_checkpoint(run_dir)["iteration"] == iterations[0]
