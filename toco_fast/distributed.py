"""Process-group set-up for ``torchrun`` and the few collective helpers the trainer needs.

A plain ``python -m toco_fast.train`` is a world of one and never touches ``torch.distributed``; under ``torchrun``
(``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in the environment) each process binds its GPU and joins an NCCL group
(gloo on CPU). The training step (``toco_fast.train_step.TrainStepModule``, whose output is the loss) is wrapped
in DistributedDataParallel with ``find_unused_parameters=True`` because terms switch on and off over the schedule
(the decoder gets no gradient before ``seg_start_iter``, the projection head none while CTC is off).
"""
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """Rank layout from the ``torchrun`` environment (a world of one when absent)."""
    return DistInfo(rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: Optional[torch.device] = None) -> DistInfo:
    """Join the process group when launched by ``torchrun``; returns the rank layout."""
    info = env_dist_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = device is not None and device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over ranks (the value itself in a world of one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def wrap_ddp(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around ``model`` when the world has several ranks, else the module itself."""
    if not info.enabled:
        return model
    device_ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DDP / FSDP wrapper."""
    return model.module if hasattr(model, "module") else model
