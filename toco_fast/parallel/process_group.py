"""Process-group set-up for ``torchrun`` and the device each process runs on.

A plain ``python -m toco_fast.train`` is a world of one and never touches ``torch.distributed``; under ``torchrun``
(``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in the environment) each process binds its GPU and joins an NCCL group
(gloo on CPU).
"""
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


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


def init_distributed(device: Optional[torch.device] = None, backend: Optional[str] = None) -> DistInfo:
    """Join the process group when launched by ``torchrun``; returns the rank layout.

    ``backend`` defaults to NCCL for a CUDA ``device``, else gloo (``toco_fast.parallel.plan.resolve_backend``
    checks a configured one). Multi-node runs need nothing more: ``torchrun``'s rendezvous sets the environment.
    """
    info = env_dist_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = device is not None and device.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(device if device.index is not None else info.local_rank)
    dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
    return info


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0, argument: str = "device") -> torch.device:
    """The device for ``name``: ``auto`` -> this rank's GPU when CUDA is available, else the CPU; ``cuda`` ->
    ``cuda:<local_rank>``. Raises ValueError naming ``argument`` when CUDA is asked for but not available."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{argument}: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{argument}: {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
