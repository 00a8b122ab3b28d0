"""The one place that wraps a module for distribution (DDP or FSDP2), applies activation checkpointing and
compilation, and the one way back to the bare model. The model and the training step know nothing of
wrappers: the loop tells the wrapper the schedule's phase (``begin_phase``) and gathers sharded parameters for
evaluation (``gathered``)."""
import functools
from typing import Callable, Hashable, Optional, Union

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from toco_fast.parallel.ddp import PhasedDDP
from toco_fast.parallel.fsdp import fsdp_units, gathered, shard
from toco_fast.parallel.plan import ParallelPlan
from toco_fast.parallel.process_group import DistInfo

__all__ = ["parallelize", "begin_phase", "gathered", "checkpoint_blocks", "compile_model", "unwrap"]


def parallelize(module: nn.Module, device: torch.device, info: DistInfo,
                plan: Optional[ParallelPlan] = None) -> nn.Module:
    """``module`` (the training-step module, holding the ToCo as ``module.model``) ready for ``plan``.

    * ``none`` (or a world of one): ``module`` itself.
    * ``ddp``: a :class:`~toco_fast.parallel.ddp.PhasedDDP` (bucketed all-reduce overlapping the backward; the
      parameters a phase leaves idle are learned once per phase instead of searched for every iteration).
    * ``fsdp``: ``module`` itself, sharded in place by ``fully_shard`` (units: :mod:`toco_fast.parallel.fsdp`).
      Parameters are replaced by sharded ones, so build the optimizer after this call.

    ``plan`` defaults to DDP when the world has several ranks.
    """
    plan = plan or ParallelPlan(mode="ddp" if info.enabled else "none")
    if not info.enabled or plan.mode == "none":
        return module
    if plan.mode == "fsdp":
        return shard(module, fsdp_units(module.model, plan.fsdp_unit), device, plan.reshard_after_forward,
                     plan.param_dtype)
    device_ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return PhasedDDP(module, device_ids=device_ids)


def begin_phase(module: nn.Module, phase: Hashable) -> None:
    """Tell ``module`` (what ``parallelize`` returned) the schedule phase of the next step: a key that changes when
    the set of parameters the step trains may change. Only DDP needs it; a no-op otherwise."""
    if isinstance(module, PhasedDDP):
        module.set_phase(phase)


def checkpoint_blocks(blocks: nn.ModuleList) -> None:
    """Activation checkpointing per block: a grad-enabled forward keeps only each block's input and recomputes the
    block in backward (less memory for bigger batches, same values and gradients). No-grad passes run as before.
    The blocks keep their parameter names, so checkpoints stay interchangeable."""
    for block in blocks:
        if not isinstance(block.forward, functools.partial):  # not applied twice
            block.forward = functools.partial(_checkpointed, block.forward)


def compile_model(model: nn.Module, backend: Union[str, Callable] = "inductor") -> None:
    """``torch.compile`` ToCo's parts in place (after ``checkpoint_blocks``, as torchtitan orders them): each encoder
    block, the decoder and both projection heads. Parameter names and the model's structure are unchanged, so
    checkpoints, FSDP units and ``unwrap`` are unaffected. The blocks run at several token counts per step (global
    views, CAM scales, local crops) and the heads at several row counts; dynamo generalises them to dynamic shapes
    after the first recompilation. The step's glue (crops, CAM post-processing, PAR / PTC / energy custom ops) stays
    eager: its shapes and control flow follow the labels of each batch."""
    for module in (*model.encoder.blocks, model.decoder, model.proj_head, model.proj_head_t):
        module.compile(backend=backend)


def _checkpointed(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module inside any stack of wrappers: DDP / DataParallel / PhasedDDP (``.module``) and torch.compile
    (``._orig_mod``). FSDP2's ``fully_shard`` wraps in place, so such a module is already bare."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel, PhasedDDP)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module
