"""One iteration's update behind the non-finite guard, with the host reads deferred to the loop's sync points.

``GuardedUpdate.apply`` runs the backward (scaled under fp16), computes the gradients-finite flag on the device,
queues the iteration's numbers (``toco_fast.train.pending``), gives idle parameters their zero gradients and steps the
optimizer so that a non-finite iteration changes nothing:

* fp16: ``GradScaler.step`` skips an overflowing step on the device (counted when read, the run goes on);
* an optimizer that skips on a device flag (torch's fused AdamW, ``optim.skips_on_device``): ``step_unless``;
* any other optimizer: the queue is read first, so a non-finite iteration raises before its update.

``settle`` (at a sync point) reads the queue with one transfer and raises ``NonFiniteLossError`` for the first
iteration whose loss, or (outside fp16) gradients, are not finite; ``take`` hands the reports read so far to the loop.
"""
from typing import Dict, List, Optional

import torch

from toco_fast.parallel.collectives import all_reduce_mean
from toco_fast.parallel.state import plain_tensor
from toco_fast.train.finite import NonFiniteLossError, check_finite_loss, grads_finite
from toco_fast.train.optim import fill_idle_grads, skips_on_device, step_unless
from toco_fast.train.pending import PendingSteps, StepReport, step_record


class GuardedUpdate:
    """Backward + optimizer step of each iteration (``apply``) and the deferred reads of their numbers.

    Args:
        optimizer: over the model's parameters (under FSDP their shards).
        scaler: the fp16 ``GradScaler``, or None.
        fill_idle: give parameters the backward left without a gradient a zero one (``optim.idle_params:
            zero_grad``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: Optional[torch.amp.GradScaler] = None,
                 fill_idle: bool = True):
        self.optimizer, self.scaler, self.fill_idle = optimizer, scaler, fill_idle
        self.pending = PendingSteps()  # queued on the device, not read yet
        self._settled: List[StepReport] = []  # read and checked, not taken by the loop yet

    def apply(self, iteration: int, loss: torch.Tensor, terms: Dict[str, torch.Tensor],
              stop_requested: bool) -> None:
        """Backward of ``loss`` and the update of ``iteration`` (1-based), applied only when the loss and the
        gradients are finite on every process; ``terms`` and ``stop_requested`` are queued with it (averaged over
        the processes)."""
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        grads_ok = plain_tensor(grads_finite(self.optimizer))  # FSDP: computed from the shards
        record = step_record(iteration, loss, terms, grads_ok, stop_requested)
        record.numbers = all_reduce_mean(record.numbers)
        self.pending.add(record)
        if self.fill_idle:
            fill_idle_grads(self.optimizer)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif skips_on_device(self.optimizer):
            step_unless(self.optimizer, (~record.all_finite()).float())
        else:
            self.settle()  # raises before the update when something is not finite
            self.optimizer.step()

    def settle(self) -> None:
        """Read the queued iterations (one host sync) and check them in order: a non-finite loss, or non-finite
        gradients outside fp16, raises NonFiniteLossError naming the first such iteration (whose update was not
        applied). fp16 overflow steps pass (``StepReport.grads_finite`` is False: the scaler skipped them)."""
        for report in self.pending.read():
            check_finite_loss(report.iteration, report.values)
            if not report.grads_finite and self.scaler is None:
                raise NonFiniteLossError(report.iteration, ["gradients"], report.values)
            self._settled.append(report)

    def take(self) -> List[StepReport]:
        """``settle``, then every report read since the last ``take``, oldest first."""
        self.settle()
        reports, self._settled = self._settled, []
        return reports
