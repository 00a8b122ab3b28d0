"""A 2-process run (gloo, CPU) equals a 1-process run with the same global batch, for DDP and for FSDP, and
checkpoints move between world sizes and modes, continuing the same sequence.

Every loss term is on by iteration 4 (cls from the start, seg / reg from 2, PTC / CTC from 4). The comparison is
the largest ``|w_a - w_b| / |w_b|`` over parameter tensors, leaving out the attention key bias: softmax is invariant
to a constant added to every key, so that bias's gradient is zero up to float rounding and AdamW turns the rounding
noise into lr-sized steps of random sign, which differ with any change of summation order (it never changes an
output). Its absolute drift is bounded instead.
"""
import json
import os

import pytest
import torch
from dist_helpers import Train, model_state, run_world

from toco_fast.io.checkpoint import checkpoint_path, load_checkpoint
from toco_fast.model.factory import model_from_checkpoint

TOLERANCE = 1e-5
# Evaluation of the whole (3-image) validation split at iteration 8.
EVAL_AT_8 = ("eval.enabled=true", "train.eval_iters=8", "eval.max_images=null")


def _key_bias(name: str, tensor: torch.Tensor):
    """``(tensor without its key-bias part, the key-bias part)``; the second is None for other tensors."""
    if not name.endswith("attn.qkv.bias"):
        return tensor, None
    width = tensor.numel() // 3
    return torch.cat([tensor[:width], tensor[2 * width:]]), tensor[width:2 * width]


def max_relative_difference(a, b) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        (x, x_key), (y, y_key) = _key_bias(name, a[name].double()), _key_bias(name, b[name].double())
        worst = max(worst, ((x - y).norm() / y.norm().clamp_min(1e-12)).item())
        if x_key is not None:
            assert (x_key - y_key).abs().max() < 1e-4, name  # 8 steps of at most ~lr each
    return worst


def _losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return {r["iteration"]: r["loss"] for r in map(json.loads, f) if r["kind"] == "train"}


def _evaluation(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return {r["iteration"]: r for r in map(json.loads, f) if r["kind"] == "eval"}


@pytest.fixture(scope="module")
def runs(synthetic_root, tmp_path_factory):
    """The 1-process reference (8 iterations, checkpoints at 4 and 8) and the run directories of the others."""
    out = tmp_path_factory.mktemp("runs")
    Train(synthetic_root, out / "one", *EVAL_AT_8)()
    return out


@pytest.fixture(scope="module")
def ddp_runs(runs, synthetic_root):
    """2 processes, DDP: a full run, and resumes of the 1-process and of its own iteration-4 checkpoints."""
    run_world(2, [Train(synthetic_root, runs / "ddp", "train.dist=ddp"),
                  Train(synthetic_root, runs / "one_to_ddp", resume=checkpoint_path(runs / "one", 4)),
                  Train(synthetic_root, runs / "ddp_to_ddp", resume=checkpoint_path(runs / "ddp", 4))])
    Train(synthetic_root, runs / "ddp_to_one", resume=checkpoint_path(runs / "ddp", 4))()
    return runs


@pytest.fixture(scope="module")
def fsdp_runs(runs, synthetic_root):
    """2 processes, FSDP (per-block units, resharding after forward): a full run evaluated at iterations 4 and 8
    (uneven validation shards: 2 images and 1), resumes of the 1-process and of its own checkpoints; then a
    1-process resume of its sharded checkpoint."""
    fsdp = ("train.dist=fsdp", "train.reshard_after_forward=true")
    run_world(2, [Train(synthetic_root, runs / "fsdp", *fsdp, *EVAL_AT_8, "train.eval_iters=4"),
                  Train(synthetic_root, runs / "one_to_fsdp", *fsdp, resume=checkpoint_path(runs / "one", 4)),
                  Train(synthetic_root, runs / "fsdp_to_fsdp", *fsdp, resume=checkpoint_path(runs / "fsdp", 4))])
    Train(synthetic_root, runs / "fsdp_to_one", resume=checkpoint_path(runs / "fsdp", 4))()
    return runs


def test_ddp_equals_one_process(ddp_runs):
    one, ddp = model_state(ddp_runs / "one"), model_state(ddp_runs / "ddp")
    difference = max_relative_difference(ddp, one)
    print(f"DDP vs 1 process: max relative parameter difference {difference:.3g}")
    assert difference <= TOLERANCE
    assert _losses(ddp_runs / "ddp") == pytest.approx(_losses(ddp_runs / "one"), rel=1e-5)


def _assert_resumes_with_any_world_size(runs, mode: str) -> None:
    """Runs resumed 1 -> 2 and 2 -> 1 processes end within TOLERANCE of one process; 2 -> 2 bit-exactly."""
    one, distributed = model_state(runs / "one"), model_state(runs / mode)
    for name, run in (("1 -> 2", f"one_to_{mode}"), ("2 -> 1", f"{mode}_to_one")):
        difference = max_relative_difference(model_state(runs / run), one)
        print(f"{mode.upper()} resume {name}: max relative parameter difference {difference:.3g}")
        assert difference <= TOLERANCE
    resumed = model_state(runs / f"{mode}_to_{mode}")
    assert all(torch.equal(resumed[name], distributed[name]) for name in distributed), "2 -> 2 must be bit-exact"


def test_ddp_checkpoints_resume_with_any_world_size(ddp_runs):
    _assert_resumes_with_any_world_size(ddp_runs, "ddp")
    for run in ("one_to_ddp", "ddp_to_one"):
        assert _losses(ddp_runs / run) == pytest.approx({k: v for k, v in _losses(ddp_runs / "one").items()
                                                         if k > 4}, rel=1e-5)


def test_fsdp_equals_one_process(fsdp_runs):
    one, fsdp = model_state(fsdp_runs / "one"), model_state(fsdp_runs / "fsdp")
    difference = max_relative_difference(fsdp, one)
    print(f"FSDP vs 1 process: max relative parameter difference {difference:.3g}")
    assert difference <= TOLERANCE
    # Evaluation gathers the shards, each rank evaluates its part of the split: the same results.
    results, reference = _evaluation(fsdp_runs / "fsdp"), _evaluation(fsdp_runs / "one")
    assert sorted(results) == [4, 8] and sorted(reference) == [8]
    for key in ("CAM_mIoU", "aux_CAM_mIoU", "Seg_Pred_mIoU"):
        assert results[8][key] == pytest.approx(reference[8][key], abs=1e-3), key


def test_fsdp_checkpoints_are_sharded_plus_one_consolidated_file(fsdp_runs):
    folder = fsdp_runs / "fsdp" / "checkpoints"
    assert sorted(os.listdir(folder)) == ["iter_0000004.dcp", "iter_0000004.pt", "iter_0000008.dcp",
                                          "iter_0000008.pt"]
    state = load_checkpoint(folder / "iter_0000008.pt")
    assert state["optimizer"] == {"sharded": "iter_0000008.dcp"}
    model, _ = model_from_checkpoint(fsdp_runs / "fsdp")  # what evaluate / infer load
    assert model.state_dict().keys() == model_state(fsdp_runs / "one").keys()


def test_fsdp_checkpoints_resume_with_any_world_size(fsdp_runs):
    _assert_resumes_with_any_world_size(fsdp_runs, "fsdp")
