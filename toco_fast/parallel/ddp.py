"""DDP around the training step, without ``find_unused_parameters`` once a phase's idle parameters are known.

ToCo's loss schedule has phases: before ``seg_start_iter`` the decoder gets no gradient, while CTC is off the
projection head gets none. DDP's reducer waits for a gradient of every parameter it manages, so it must either
search the autograd graph for unused parameters every iteration (``find_unused_parameters=True``) or not manage the
idle ones. Measured on gloo with a toy two-layer model whose second layer is idle for two iterations:

* ``find_unused_parameters=False``: the first iteration's gradients stay unsynchronised (the bucket holding an idle
  parameter never fills) and the next iteration raises "Expected to have finished reduction in the prior
  iteration";
* ``static_graph=True``: fine within a phase, then "Your training graph has changed in this iteration" when the
  idle layer starts to train;
* one DDP per phase that ignores the phase's idle parameters: gradients synchronised in every iteration.

So ``PhasedDDP`` keeps one DDP per phase. The first iteration of a new phase runs with
``find_unused_parameters=True`` and reads, from the autograd graph of its output, which parameters the step
reached; a parameter is idle when no rank reached it (one small all-reduce). From the next iteration on, the phase
runs a DDP that ignores the idle parameters, with ``find_unused_parameters=False``: bucketed all-reduce overlapping
the backward, no graph search. The optimizer gives idle parameters their zero gradients after the backward
(``toco_fast.train.optim.fill_idle_grads``) identically on every rank, so they stay equal without communication.
Rebuilding a DDP re-broadcasts rank 0's parameters (already equal) and happens twice per phase, i.e. a handful of
times per run. A phase that trains every parameter makes the reducer warn once, in its first iteration, that
``find_unused_parameters=True`` found nothing unused: expected, the next iteration runs without it.
"""
import inspect
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Set

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

_UNSET = object()
# ToCo has no buffer a forward changes (no batch norm): skip DDP's per-forward buffer broadcast (the keyword was
# renamed in newer torch).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
                   else {"broadcast_buffers": False})


class PhasedDDP(nn.Module):
    """``module`` under DistributedDataParallel, rebuilt per phase (see the module docstring).

    Args:
        module: the training-step module (its output's first tensor is the loss).
        device_ids: DDP's ``device_ids`` (one CUDA device, or None on the CPU).
    """

    def __init__(self, module: nn.Module, device_ids: Optional[Sequence[int]] = None):
        super().__init__()
        self.module = module
        self.device_ids = list(device_ids) if device_ids is not None else None
        self.phase: Hashable = None
        self.idle: Dict[Hashable, List[str]] = {}  # phase -> names of the parameters it leaves without gradient
        self._built_for: Any = _UNSET
        object.__setattr__(self, "_ddp", None)  # not a registered submodule: parameters() stays the module's

    def set_phase(self, phase: Hashable) -> None:
        """The phase of the next forward: any hashable key that changes when the set of trained parameters may."""
        self.phase = phase

    def forward(self, *args, **kwargs):
        known = self.phase in self.idle
        if self._built_for != (self.phase, known):
            self._build(self.idle.get(self.phase, []), find_unused=not known)
            self._built_for = (self.phase, known)
        output = self._ddp(*args, **kwargs)
        if not known:
            self.idle[self.phase] = self._globally_unreached(output)
        return output

    def _build(self, ignored: List[str], find_unused: bool) -> None:
        # Drop the previous DDP first: its reducer's autograd hooks go with it.
        object.__setattr__(self, "_ddp", None)
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.module, ignored)
        ddp = DistributedDataParallel(self.module, device_ids=self.device_ids, find_unused_parameters=find_unused,
                                      gradient_as_bucket_view=True, **_NO_BUFFER_SYNC)
        object.__setattr__(self, "_ddp", ddp)

    def _globally_unreached(self, output) -> List[str]:
        """Names of the trainable parameters that no rank's autograd graph reaches from ``output``."""
        reached = reached_parameters(_tensors(output))
        named = [(name, p) for name, p in self.module.named_parameters() if p.requires_grad]
        if not named:
            return []
        used = torch.tensor([float(id(p) in reached) for _, p in named], device=named[0][1].device)
        dist.all_reduce(used, op=dist.ReduceOp.MAX)
        return [name for (name, _), flag in zip(named, used.tolist()) if flag == 0.0]


def reached_parameters(outputs: Iterable[torch.Tensor]) -> Set[int]:
    """``id`` of every leaf tensor (parameter) the autograd graph of ``outputs`` accumulates a gradient into."""
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    seen, reached = set(), set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            reached.add(id(variable))
        stack.extend(child for child, _ in node.next_functions)
    return reached


def _tensors(value) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []
