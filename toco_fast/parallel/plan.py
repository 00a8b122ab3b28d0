"""What a run's distribution is: the mode (one process, DDP or FSDP), the process-group backend and the FSDP
settings, resolved from the configured words and the ``torchrun`` world, with a one-line error for a set-up that
cannot work (checked on every rank before any process group exists, so every rank reaches the same verdict).
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from toco_fast.config.schema import ConfigError, TrainConfig

MODES = ("none", "ddp", "fsdp")


class ParallelSetupError(ConfigError):
    """The distribution settings cannot work here (the message names the setting and what to do instead)."""


@dataclass(frozen=True)
class ParallelPlan:
    """A resolved distribution.

    Attributes:
        mode: ``none`` (a world of one), ``ddp`` or ``fsdp``.
        backend: the process-group backend (``nccl`` or ``gloo``); unused in a world of one.
        fsdp_unit: ``block`` (each encoder block its own FSDP unit) or ``model``.
        reshard_after_forward: FSDP frees gathered parameters after each forward.
        param_dtype: FSDP's compute dtype for gathered parameters (bf16 with ``--bf16``), None for fp32.
    """

    mode: str = "none"
    backend: str = "gloo"
    fsdp_unit: str = "block"
    reshard_after_forward: bool = False
    param_dtype: Optional[torch.dtype] = None

    @property
    def sharded(self) -> bool:
        """Whether parameters and optimizer state are sharded (checkpoints then go through DCP)."""
        return self.mode == "fsdp"


def plan_for_config(train: TrainConfig, world_size: int, device: torch.device) -> ParallelPlan:
    """``plan_parallel`` with the ``train`` section's settings (bf16 FSDP parameters with ``--bf16``)."""
    return plan_parallel(train.dist, world_size, device, backend=train.backend, fsdp_unit=train.fsdp_unit,
                         reshard_after_forward=train.reshard_after_forward,
                         param_dtype=torch.bfloat16 if train.precision == "bf16" else None)


def plan_parallel(dist_mode: str, world_size: int, device: torch.device, backend: str = "auto",
                  fsdp_unit: str = "block", reshard_after_forward: bool = False,
                  param_dtype: Optional[torch.dtype] = None) -> ParallelPlan:
    """The plan for ``dist_mode`` (``auto`` | ``none`` | ``ddp`` | ``fsdp``) in a world of ``world_size`` processes.

    ``auto`` is DDP when several processes run, else one process; DDP or FSDP in a world of one has nothing to
    synchronise or shard and runs as one process.

    Raises:
        ParallelSetupError: ``none`` under a multi-process launch, NCCL asked for on the CPU or missing from this
            torch, a multi-process launch without ``torch.distributed``, FSDP on a torch without FSDP2
            (``fully_shard``) or without ``torch.distributed.checkpoint``.
    """
    if dist_mode not in ("auto",) + MODES:
        raise ParallelSetupError(f"train.dist: expected one of auto, none, ddp, fsdp, got {dist_mode!r}")
    if dist_mode == "none" and world_size > 1:
        raise ParallelSetupError(f"train.dist=none: launched as {world_size} processes, which would train "
                                 f"{world_size} unsynchronised copies; use --dist ddp or --dist fsdp (or auto)")
    if world_size > 1 and not dist.is_available():
        raise ParallelSetupError(f"WORLD_SIZE={world_size}: this torch build has no torch.distributed; launch one "
                                 f"process")
    if dist_mode == "fsdp":
        from toco_fast.io.dcp import dcp_api
        from toco_fast.parallel.fsdp import check_fsdp

        try:
            check_fsdp(reshard_after_forward)
            dcp_api()
        except RuntimeError as exc:
            raise ParallelSetupError(f"train.dist=fsdp: {exc}; use --dist ddp") from None
    chosen = resolve_backend(backend, device) if world_size > 1 else "gloo"
    mode = ("ddp" if dist_mode == "auto" else dist_mode) if world_size > 1 else "none"
    return ParallelPlan(mode=mode, backend=chosen, fsdp_unit=fsdp_unit, reshard_after_forward=reshard_after_forward,
                        param_dtype=param_dtype if mode == "fsdp" else None)


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> NCCL for CUDA devices, gloo for the CPU; raises ParallelSetupError for NCCL without CUDA."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ParallelSetupError(f"train.backend: expected auto, nccl or gloo, got {backend!r}")
    if backend == "nccl" and device.type != "cuda":
        raise ParallelSetupError(f"train.backend=nccl: NCCL needs CUDA devices but this run's device is "
                                 f"{device.type}; use --set train.backend=gloo (or auto) on the CPU")
    if backend == "nccl" and not (dist.is_available() and dist.is_nccl_available()):
        raise ParallelSetupError("train.backend=nccl: this torch build has no NCCL; use --set train.backend=gloo")
    return backend
