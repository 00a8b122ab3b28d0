"""Per-iteration numbers that stay on the device until the loop needs them on the host.

Reading a CUDA tensor on the host waits for every queued kernel, so a loop that reads its loss each iteration leaves
the GPU idle while Python prepares the next one. The trainer instead queues each iteration's numbers (loss, terms,
gradient-finite flag, stop flag) here and reads all of them with one transfer at the next sync point (a log line, a
checkpoint, an evaluation, a stop request), then handles them in iteration order exactly as it would have one by
one.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch


@dataclass
class StepRecord:
    """One iteration's numbers as queued: ``numbers`` is a float32 vector on the device, ``names`` labels its
    first ``len(names)`` entries (the loss, then its terms); the last two are the gradients-finite flag and the
    stop flag (means over the processes)."""

    iteration: int
    names: Tuple[str, ...]
    numbers: torch.Tensor

    def all_finite(self) -> torch.Tensor:
        """0-d bool on the device: every value finite and every process's gradients finite (no host read)."""
        return torch.isfinite(self.numbers[:-2]).all() & (self.numbers[-2] >= 1.0)


@dataclass
class StepReport:
    """A ``StepRecord`` read on the host: ``values`` by name, whether every process's gradients were finite, and
    whether any process was asked to stop."""

    iteration: int
    values: Dict[str, float]
    grads_finite: bool
    stop_requested: bool


def step_record(iteration: int, loss: torch.Tensor, terms: Dict[str, torch.Tensor], grads_ok: torch.Tensor,
                stop_requested: bool) -> StepRecord:
    """Pack the detached loss, its terms and the flags of ``iteration`` into one float32 vector on the loss's
    device (the numbers the processes average with a single all-reduce)."""
    values = [loss.detach().float()] + [value.float() for value in terms.values()]
    # torch.full fills on the device; a tensor made from a Python number would be a blocking host-to-device copy.
    flags = [grads_ok.to(device=loss.device, dtype=torch.float32),
             torch.full((), float(stop_requested), dtype=torch.float32, device=loss.device)]
    return StepRecord(iteration, ("loss",) + tuple(terms), torch.stack(values + flags))


class PendingSteps:
    """The queued ``StepRecord``s, read in order by ``read`` with one host transfer."""

    def __init__(self) -> None:
        self._records: List[StepRecord] = []

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: StepRecord) -> None:
        self._records.append(record)

    def read(self) -> List[StepReport]:
        """Every queued record as a ``StepReport``, oldest first; the queue is emptied."""
        records, self._records = self._records, []
        if not records:
            return []
        flat = torch.cat([record.numbers for record in records]).tolist()
        reports, start = [], 0
        for record in records:
            count = len(record.names)
            numbers: Sequence[float] = flat[start:start + count + 2]
            start += count + 2
            reports.append(StepReport(record.iteration, dict(zip(record.names, numbers[:count])),
                                      grads_finite=numbers[count] >= 1.0, stop_requested=numbers[count + 1] > 0.0))
        return reports
