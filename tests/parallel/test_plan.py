"""The distribution plan: what ``--dist`` resolves to, and the one-line errors (printed by rank 0 only) for a set-up
that cannot work."""
import pytest
import torch
from dist_helpers import tiny_cfg

from toco_fast.cli import train as train_cli
from toco_fast.config import ConfigError, apply_overrides, load_config, save_config
from toco_fast.parallel import fsdp as fsdp_module
from toco_fast.parallel.plan import ParallelSetupError, plan_for_config, plan_parallel

CPU = torch.device("cpu")


@pytest.mark.parametrize("requested, world, mode", [
    ("auto", 1, "none"), ("auto", 2, "ddp"), ("ddp", 2, "ddp"), ("fsdp", 2, "fsdp"), ("none", 1, "none"),
    ("ddp", 1, "none"), ("fsdp", 1, "none"),  # nothing to synchronise or shard in a world of one
])
def test_modes(requested, world, mode):
    plan = plan_parallel(requested, world, CPU)
    assert plan.mode == mode and plan.backend == "gloo" and plan.sharded == (mode == "fsdp")


def test_config_words_reach_the_plan():
    cfg = apply_overrides(load_config("synthetic_tiny"), ["train.dist=fsdp", "train.fsdp_unit=model",
                                                          "train.reshard_after_forward=true", "train.precision=bf16"])
    plan = plan_for_config(cfg.train, 4, CPU)
    assert (plan.mode, plan.fsdp_unit, plan.reshard_after_forward, plan.param_dtype) == (
        "fsdp", "model", True, torch.bfloat16)
    assert plan_for_config(cfg.train, 1, CPU).param_dtype is None


@pytest.mark.parametrize("override, fragment", [
    ("train.dist=mpi", "train.dist: expected one of ('auto', 'none', 'ddp', 'fsdp'), got 'mpi'"),
    ("train.backend=mpi", "train.backend: expected one of ('auto', 'nccl', 'gloo'), got 'mpi'"),
    ("train.fsdp_unit=layer", "train.fsdp_unit: expected one of ('model', 'block'), got 'layer'"),
    ("train.dist=fsdp", "train.dist=fsdp with train.precision=fp16"),
])
def test_config_checks(override, fragment):
    with pytest.raises(ConfigError, match="^" + fragment.replace("(", r"\(").replace(")", r"\)")):
        apply_overrides(load_config("synthetic_tiny"), [override, "train.precision=fp16"]
                        if override == "train.dist=fsdp" else [override])


def test_setup_errors_name_the_setting():
    with pytest.raises(ParallelSetupError, match="train.dist=none: launched as 2 processes"):
        plan_parallel("none", 2, CPU)
    with pytest.raises(ParallelSetupError, match="train.backend=nccl: NCCL needs CUDA devices but this run's "
                                                 "device is cpu"):
        plan_parallel("ddp", 2, CPU, backend="nccl")


def _no_fsdp2():
    raise RuntimeError("torch 2.3.0 has no FSDP2 (torch.distributed.fsdp.fully_shard, torch >= 2.4)")


def test_fsdp_on_a_torch_without_fully_shard(monkeypatch):
    monkeypatch.setattr(fsdp_module, "fsdp_api", _no_fsdp2)
    with pytest.raises(ParallelSetupError, match=r"^train.dist=fsdp: torch 2.3.0 has no FSDP2 .*; use --dist ddp$"):
        plan_parallel("fsdp", 2, CPU)
    assert plan_parallel("ddp", 2, CPU).mode == "ddp"  # nothing else needs it


@pytest.fixture
def tiny_config(synthetic_root, tmp_path):
    path = str(tmp_path / "tiny.yaml")
    save_config(tiny_cfg(synthetic_root, "train.max_iters=1", "eval.enabled=false"), path)
    return path


@pytest.mark.parametrize("argv, fragment", [
    (["--set", "train.backend=nccl"], "train.backend=nccl: NCCL needs CUDA devices"),
    (["--dist", "none"], "train.dist=none: launched as 2 processes"),
    (["--dist", "fsdp"], "train.dist=fsdp: torch 2.3.0 has no FSDP2"),
])
@pytest.mark.parametrize("rank", ["0", "1"])
def test_misconfigurations_print_one_line_once(capsys, monkeypatch, tiny_config, tmp_path, argv, fragment, rank):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(fsdp_module, "fsdp_api", _no_fsdp2)
    status = train_cli.main(["--config", tiny_config, "--device", "cpu", "--run-dir", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert status == 2
    if rank == "1":
        assert err == ""
    else:
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "r").exists()
