"""The one place that wraps a module for distribution (and, later, compilation), and the one way back to the bare
model. The model and the training step know nothing of wrappers."""
import torch
import torch.nn as nn

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
