"""Model and optimizer state in one process: the optimizer's numbered state renamed by parameter, the sharded form
through a DCP folder and back, and ``parallelize`` in a world of one."""
import torch
import torch.nn as nn

from toco_fast.io.dcp import load_sharded, save_sharded
from toco_fast.parallel.plan import ParallelPlan
from toco_fast.parallel.process_group import DistInfo
from toco_fast.parallel.state import (
    full_model_state,
    is_sharded,
    load_full_state,
    load_sharded_state,
    named_optimizer_state,
    sharded_state,
)
from toco_fast.parallel.wrap import begin_phase, gathered, parallelize, unwrap


def _trained(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": trainable[:1], "lr": 1e-2}, {"params": trainable[1:], "lr": 1e-3}])
    for _ in range(2):
        model(torch.randn(5, 3)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def test_named_optimizer_state():
    model, optimizer = _trained(0)
    named = named_optimizer_state(model, optimizer, optimizer.state_dict())
    assert [g["params"] for g in named["param_groups"]] == [["0.weight"], ["2.weight", "2.bias"]]
    assert torch.equal(named["state"]["2.bias"]["exp_avg"], optimizer.state[model[2].bias]["exp_avg"])


def test_full_and_sharded_forms_round_trip_in_one_process(tmp_path):
    model, optimizer = _trained(0)
    assert not is_sharded(model) and full_model_state(model).keys() == model.state_dict().keys()
    save_sharded(sharded_state(model, optimizer), tmp_path / "ckpt.dcp")

    fresh, fresh_optimizer = _trained(1)
    template = sharded_state(fresh, fresh_optimizer)
    load_sharded(template, tmp_path / "ckpt.dcp")
    load_sharded_state(fresh, fresh_optimizer, template)
    for name, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    expected, got = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert [g["lr"] for g in got["param_groups"]] == [1e-2, 1e-3]
    for index, state in expected["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(got["state"][index][key]), torch.as_tensor(value)), (index, key)

    other, other_optimizer = _trained(2)
    load_full_state(other, other_optimizer, model.state_dict(), optimizer.state_dict())
    assert torch.equal(other[2].weight, model[2].weight)


def test_a_world_of_one_is_not_wrapped():
    step = nn.Linear(2, 2)
    for mode in ("none", "ddp", "fsdp"):
        wrapped = parallelize(step, torch.device("cpu"), DistInfo(), ParallelPlan(mode=mode))
        assert wrapped is step and unwrap(wrapped) is step
    begin_phase(step, ("cls",))  # no-ops
    with gathered(step) as inside:
        assert inside is step
