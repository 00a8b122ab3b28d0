"""FSDP2 (``fully_shard``) for the training step: the availability check, the units, full parameters on demand.

Units (each gathers its parameters before its forward and reduce-scatters their gradients after its backward):

* the root: the training-step module, i.e. every parameter no smaller unit holds (patch embedding, classifiers,
  decoder, and with ``unit="model"`` the whole encoder), gathered once when the step starts;
* with ``unit="block"``, every encoder block, gathered block by block (the encoder runs ~7 times a step: with
  ``reshard_after_forward`` each run gathers again, which saves memory and costs traffic);
* always, the student and the teacher projection heads, each its own unit. The step's EMA teacher update runs
  before either head's forward, so it reads and writes their shards (sharded alike), the way the optimizer updates
  the student; updating gathered copies would be lost when they are freed.

The no-grad CAM passes run inside the step's forward, where the root's and the blocks' parameters are gathered.
Code outside the step (evaluation, export) wraps itself in :func:`gathered`.
"""
import contextlib
from typing import Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn


def fsdp_api() -> Tuple[object, type, type]:
    """``(fully_shard, MixedPrecisionPolicy, FSDPModule)`` of this torch; RuntimeError saying what is missing."""
    try:
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
    except ImportError:
        try:  # torch 2.4 / 2.5
            from torch.distributed._composable.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
        except ImportError:
            raise RuntimeError(f"torch {torch.__version__} has no FSDP2 (torch.distributed.fsdp.fully_shard, "
                               f"torch >= 2.4)") from None
    return fully_shard, MixedPrecisionPolicy, FSDPModule


def fsdp_units(model: nn.Module, unit: str) -> List[nn.Module]:
    """The modules of a ToCo ``model`` sharded as their own units, innermost first (see the module docstring)."""
    if unit not in ("model", "block"):
        raise ValueError(f"train.fsdp_unit: expected model or block, got {unit!r}")
    blocks = list(model.encoder.blocks) if unit == "block" else []
    return blocks + [model.proj_head, model.proj_head_t]


def shard(root: nn.Module, units: List[nn.Module], device: torch.device, reshard_after_forward: bool,
          param_dtype: Optional[torch.dtype]) -> nn.Module:
    """Apply ``fully_shard`` to ``units`` and then to ``root`` over all ranks (in place; returns ``root``).

    ``param_dtype`` (bf16 with ``--bf16``): gathered parameters in that dtype, gradients reduced in fp32, the
    sharded master weights and the optimizer state in fp32. The root does not cast its inputs: the step keeps its
    images in fp32 for the losses.
    """
    fully_shard, MixedPrecisionPolicy, _ = fsdp_api()
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    reduce_dtype = torch.float32 if param_dtype is not None else None
    for module in units:
        fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward,
                    mp_policy=MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype))
    fully_shard(root, mesh=mesh, reshard_after_forward=reshard_after_forward,
                mp_policy=MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype,
                                               cast_forward_inputs=False))
    return root


def fsdp_modules(module: nn.Module) -> List[nn.Module]:
    """The FSDP units inside ``module`` (none without FSDP, or on a torch without FSDP2)."""
    try:
        fsdp_class = fsdp_api()[2]
    except RuntimeError:
        return []
    return [m for m in module.modules() if isinstance(m, fsdp_class)]


@contextlib.contextmanager
def gathered(module: nn.Module, reshard_after_forward: bool = False) -> Iterator[nn.Module]:
    """Every FSDP unit of ``module`` holds its full parameters for the body (evaluation, export) and is resharded
    afterwards; a no-op for a module without FSDP. Collective on entry and exit: every rank enters it.

    Inside, forwards gather nothing, so ranks may run different numbers of them (evaluation shards are uneven):
    units that reshard after forward (``reshard_after_forward``, as ``shard`` was given it) stop doing so for the
    body.
    """
    units = fsdp_modules(module)
    inner = [unit for unit in units if unit is not module]  # the root never reshards after forward
    for unit in units:
        unit.unshard()
    if reshard_after_forward:
        for unit in inner:
            unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield module
    finally:
        if reshard_after_forward:
            for unit in inner:
                unit.set_reshard_after_forward(True, recurse=False)
        for unit in units:
            unit.reshard()


def check_fsdp(reshard_after_forward: bool) -> None:
    """RuntimeError when this torch lacks what FSDP training needs (``fully_shard``; with
    ``reshard_after_forward``, ``FSDPModule.set_reshard_after_forward`` for evaluation)."""
    fsdp_class = fsdp_api()[2]
    if reshard_after_forward and not hasattr(fsdp_class, "set_reshard_after_forward"):
        raise RuntimeError(f"torch {torch.__version__} cannot switch FSDP's reshard_after_forward off for evaluation "
                           f"(FSDPModule.set_reshard_after_forward); leave train.reshard_after_forward off")
