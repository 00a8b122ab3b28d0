"""Model and optimizer state that does not depend on how the model is distributed.

Two forms:

* full: the plain ``state_dict`` of the bare model (parameter names as ``ToCo.state_dict()``) and the optimizer's own
  ``state_dict`` (parameters numbered in ``param_groups`` order). A replicated model (one process, DDP) has it as
  is; an FSDP model gathers it (a collective; rank 0 receives it on the CPU). It is what the consolidated
  checkpoint file holds and what evaluate / infer load.
* sharded: both keyed by parameter name, with FSDP's shards as DTensors (plain tensors for a replicated model), the
  form ``torch.distributed.checkpoint`` (DCP) saves and loads, resharding across world sizes on the way.

Either form loads into a model distributed any way (``load_full_state``, ``load_sharded_state``). A loaded optimizer
keeps its own kernel choice (``IMPLEMENTATION_OPTIONS``): a checkpoint written with another AdamW kernel (the
per-parameter loop, or on another device) resumes with the one this process built.
"""
from typing import Any, Dict

import torch
import torch.nn as nn


# Param-group options that choose how the update is computed, not what it is.
IMPLEMENTATION_OPTIONS = ("foreach", "fused", "capturable", "differentiable")


def with_own_implementation(optimizer: torch.optim.Optimizer, state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` (an optimizer state dict, numbered or named) with ``optimizer``'s implementation options in its
    param groups, so that loading it does not switch the kernel (torch copies the saved group options over the
    current ones, and places ``step`` by them: on the parameters' device for the fused kernel)."""
    own = [{key: group[key] for key in IMPLEMENTATION_OPTIONS if key in group} for group in optimizer.param_groups]
    if len(own) != len(state["param_groups"]):
        raise ValueError(f"optimizer state: {len(state['param_groups'])} param groups saved, {len(own)} now")
    return {**state, "param_groups": [{**saved, **mine} for saved, mine in zip(state["param_groups"], own)]}


def _api():
    from torch.distributed.checkpoint import state_dict as api

    return api


def plain_tensor(value: torch.Tensor) -> torch.Tensor:
    """``value`` as a plain tensor: a DTensor (a result computed from FSDP shards) in full, which for a reduced value
    may take a collective (every rank calls it); a plain tensor as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP shards (DTensors)."""
    return any(type(p).__name__ == "DTensor" for p in model.parameters())


def full_model_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The full ``state_dict`` of the bare ``model``; under FSDP a collective whose result reaches rank 0 only (on
    the CPU; other ranks get ``{}``)."""
    if not is_sharded(model):
        return model.state_dict()
    api = _api()
    return api.get_model_state_dict(model, options=api.StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: Dict[str, torch.Tensor],
                    optimizer_state: Dict[str, Any]) -> None:
    """Load the full form (every rank passes all of it) into ``model`` and ``optimizer``."""
    optimizer_state = with_own_implementation(optimizer, optimizer_state)
    if not is_sharded(model):
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    api = _api()
    options = api.StateDictOptions(full_state_dict=True)
    api.set_model_state_dict(model, model_state, options=options)
    api.set_optimizer_state_dict(model, optimizer, named_optimizer_state(model, optimizer, optimizer_state),
                                 options=options)


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> Dict[str, Dict[str, Any]]:
    """``{"model": ..., "optimizer": ...}`` in the sharded form (see the module docstring). On a fresh optimizer
    the state is first created by a zero-learning-rate step, so it can serve as the template DCP loads into."""
    api = _api()
    return {"model": api.get_model_state_dict(model), "optimizer": api.get_optimizer_state_dict(model, optimizer)}


def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: Dict[str, Dict[str, Any]]) -> None:
    """Load what ``sharded_state`` returned (after DCP filled it) into ``model`` and ``optimizer``."""
    api = _api()
    api.set_model_state_dict(model, state["model"])
    api.set_optimizer_state_dict(model, optimizer, with_own_implementation(optimizer, state["optimizer"]))


def named_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                          numbered: Dict[str, Any]) -> Dict[str, Any]:
    """The optimizer's own ``state_dict`` (parameters numbered in ``param_groups`` order) keyed by parameter name
    instead, as ``torch.distributed.checkpoint.state_dict`` expects it."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved_groups = numbered["param_groups"]
    if sum(len(group["params"]) for group in saved_groups) != len(order):
        raise ValueError(f"optimizer state: {sum(len(g['params']) for g in saved_groups)} parameters saved, "
                         f"{len(order)} optimised now; expected the same model")
    name_of = {index: order[position] for position, index in
               enumerate(index for group in saved_groups for index in group["params"])}
    return {"state": {name_of[index]: value for index, value in numbered["state"].items()},
            "param_groups": [{**group, "params": [name_of[i] for i in group["params"]]} for group in saved_groups]}
