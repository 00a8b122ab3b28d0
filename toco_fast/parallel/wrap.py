"""The one place that wraps a module for distribution, applies activation checkpointing (and, later, compilation),
and the one way back to the bare model. The model and the training step know nothing of wrappers."""
import functools

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from toco_fast.parallel.process_group import DistInfo


def parallelize(module: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when the world has several ranks, else ``module`` itself.

    ``find_unused_parameters=True``: loss terms switch on and off over the schedule (the decoder gets no gradient
    before ``seg_start_iter``, the projection head none while CTC is off).
    """
    if not info.enabled:
        return module
    device_ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)


def checkpoint_blocks(blocks: nn.ModuleList) -> None:
    """Activation checkpointing per block: a grad-enabled forward keeps only each block's input and recomputes the
    block in backward (less memory for bigger batches, same values and gradients). No-grad passes run as before.
    The blocks keep their parameter names, so checkpoints stay interchangeable."""
    for block in blocks:
        if not isinstance(block.forward, functools.partial):  # not applied twice
            block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module inside any stack of wrappers: DDP / DataParallel (``.module``) and torch.compile
    (``._orig_mod``). FSDP2's ``fully_shard`` wraps in place, so such a module is already bare."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module
