"""The loop: exact resume, crash-safe checkpoints, the non-finite stop, the command line, --check-data."""
import json
import os

import pytest
import torch

from toco_fast.cli import train as train_cli
from toco_fast.config import from_dict, load_config, save_config
from toco_fast.io.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from toco_fast.train import step as step_module
from toco_fast.train.loop import NonFiniteLossError, train
from toco_fast.train.optim import poly_warmup_multiplier
from train_helpers import tiny_cfg


def _params(run_dir):
    return load_checkpoint(run_dir)


def test_resume_is_bitwise_exact(synthetic_root, tmp_path, monkeypatch):
    full = train(tiny_cfg(synthetic_root), run_dir=str(tmp_path / "full"))
    assert full.iteration == 6 and full.eval_results is not None

    # The same run, killed (Ctrl-C) in iteration 4, right after its first checkpoint, then resumed from the CLI.
    real_step = step_module.train_step

    def interrupted(*args, n_iter, **kwargs):
        if n_iter == 3:
            raise KeyboardInterrupt
        return real_step(*args, n_iter=n_iter, **kwargs)

    monkeypatch.setattr(step_module, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(synthetic_root), run_dir=str(tmp_path / "split"))
    monkeypatch.undo()
    resumed_cfg, resume = train_cli.config_from_args(
        train_cli.build_parser().parse_args(["--resume", str(tmp_path / "split")]))
    assert resume.path.endswith("iter_0000003.pt") and resume.state["iteration"] == 3
    train(resumed_cfg, resume=resume)

    a, b = _params(tmp_path / "full"), _params(tmp_path / "split")
    assert a["iteration"] == b["iteration"] == 6
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        for key in va:
            assert torch.equal(torch.as_tensor(va[key]), torch.as_tensor(vb[key])), (ka, key)

    # metrics of the resumed run: one consistent history (log at 2, 4, 6; eval at 3, 6)
    with open(tmp_path / "split" / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [(r["kind"], r["iteration"]) for r in records] == [
        ("train", 2), ("eval", 3), ("train", 4), ("train", 6), ("eval", 6)]
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    with open(tmp_path / "full" / "metrics.jsonl") as f:
        full_losses = [json.loads(line)["loss"] for line in f if '"train"' in line]
    assert train_losses == full_losses

    # Extending a finished run: the schedule follows the new length; --config cannot be mixed with --resume.
    parser = train_cli.build_parser()
    longer, resume = train_cli.config_from_args(parser.parse_args(["--resume", str(tmp_path / "split"),
                                                                      "--max-iters", "7"]))
    assert train(longer, resume=resume).iteration == 7
    state = load_checkpoint(tmp_path / "split")
    expected = state["schedule"]["base_lrs"][0] * poly_warmup_multiplier(
        6, warmup_iters=2, max_iters=7, warmup_ratio=1e-6, power=0.9)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected)
    assert train_cli.main(["--resume", str(tmp_path / "split"), "--config", "voc_vit_b"]) == 2


def test_crash_while_writing_checkpoint_keeps_last_good_one(synthetic_root, tmp_path, monkeypatch):
    cfg = tiny_cfg(synthetic_root, "train.eval_iters=100", "eval.enabled=false")
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint (iteration 6) dies half written
            real_save(obj, f, *args, **kwargs)
            f.truncate(f.tell() // 3)
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(OSError, match="disk full"):
        train(cfg, run_dir=str(tmp_path))
    monkeypatch.undo()
    files = os.listdir(tmp_path / "checkpoints")
    assert files == ["iter_0000003.pt"]
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 3
    resumed = train(ckpt_cfg(state), resume=str(tmp_path))
    assert resumed.iteration == 6


def ckpt_cfg(state):
    return from_dict(state["config"])


def test_non_finite_loss_stops_and_names_the_term(synthetic_root, tmp_path, monkeypatch):
    real = step_module.ctc_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return value * float("nan") if len(calls) == 5 else value

    monkeypatch.setattr(step_module, "ctc_loss", poisoned)
    cfg = tiny_cfg(synthetic_root, "eval.enabled=false", "train.ckpt_iters=2")
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, run_dir=str(tmp_path))
    assert info.value.iteration == 5 and info.value.terms == ["ctc"]
    assert "iteration 5" in str(info.value) and "ctc=nan" in str(info.value)
    assert [it for it, _ in list_checkpoints(tmp_path)] == [2, 4]  # the last good checkpoint survives
    with open(tmp_path / "train.log") as f:
        log = f.read()
    assert "iter 4/6" in log and "non-finite loss at iteration 5: term ctc=nan" in log



def test_a_checkpoint_of_another_adamw_kernel_resumes_with_this_processes_kernel(synthetic_root, tmp_path,
                                                                                 monkeypatch):
    """A run written with the per-parameter AdamW loop (every checkpoint before the CPU default became the fused
    kernel) resumes with the fused kernel, and ends where the per-parameter run ends, to fp32 rounding."""
    from toco_fast.train import loop
    from toco_fast.train.optim import build_optimizer, skips_on_device

    def cfg(*overrides):
        return tiny_cfg(synthetic_root, "eval.enabled=false", *overrides)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "build_optimizer", lambda model, c: build_optimizer(model, c, fused=False))
        train(cfg(), run_dir=str(tmp_path / "loop"))  # checkpoints at 3 and 6
    third = checkpoint_path(tmp_path / "loop", 3)
    assert all(not group["fused"] for group in load_checkpoint(third)["optimizer"]["param_groups"])
    kernels = []
    real_apply = loop.GuardedUpdate.apply

    def watched(self, *args, **kwargs):
        kernels.append((all(group["fused"] for group in self.optimizer.param_groups), skips_on_device(self.optimizer)))
        return real_apply(self, *args, **kwargs)

    monkeypatch.setattr(loop.GuardedUpdate, "apply", watched)
    train(cfg(), resume=str(third), run_dir=str(tmp_path / "resumed"))
    assert kernels == [(True, True)] * 3
    resumed, reference = _params(tmp_path / "resumed"), _params(tmp_path / "loop")
    assert resumed["iteration"] == reference["iteration"] == 6
    for name, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_cli_writes_run_dir_and_refuses_to_clobber(synthetic_root, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    save_config(tiny_cfg(synthetic_root, "train.max_iters=2", "train.eval_iters=2", "train.ckpt_iters=2"),
                str(cfg_path))
    run_dir = tmp_path / "run"
    assert train_cli.main(["--config", str(cfg_path), "--run-dir", str(run_dir), "--bf16"]) == 0
    for name in ("config.yaml", "train.log", "metrics.jsonl", "metrics.csv", "checkpoints/iter_0000002.pt"):
        assert os.path.isfile(run_dir / name), name
    saved = load_config(str(run_dir / "config.yaml"))
    assert saved.train.precision == "bf16" and saved.train.max_iters == 2
    log = (run_dir / "train.log").read_text()
    assert "bf16 autocast" in log and "Seg_Pred" in log and "mIoU" in log
    with open(run_dir / "metrics.csv") as f:
        header = f.readline().strip().split(",")
    assert {"kind", "iteration", "loss", "cls", "lr", "CAM_mIoU", "aux_CAM_mIoU", "Seg_Pred_mIoU"} <= set(header)
    # a second fresh run into the same directory would mix two runs: refused
    with pytest.raises(Exception, match="already holds checkpoints"):
        train(saved, run_dir=str(run_dir))
    assert train_cli.main(["--config", str(cfg_path), "--set", "train.nope=1"]) == 2


def test_check_data(synthetic_root, tmp_path, capsys):
    import shutil

    assert train_cli.main(["--config", "synthetic_tiny", "--set", f"data.root={synthetic_root}",
                              "--check-data"]) == 0
    assert "OK" in capsys.readouterr().out
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_root, broken)
    with open(broken / "JPEGImages" / "val_000001.png", "wb") as f:
        f.write(b"not a png")
    assert train_cli.main(["--config", "synthetic_tiny", "--set", f"data.root={broken}", "--check-data"]) == 1
    assert "val_000001" in capsys.readouterr().out
