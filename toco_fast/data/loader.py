"""DataLoaders with exact, worker-count-independent resume.

* ``ResumableSampler`` yields ``(epoch, index)`` keys. The epoch's order is one global permutation,
  ``torch.randperm(n)`` from a generator seeded with ``seed + epoch``, padded by repetition (or truncated with
  ``drop_last``), read as consecutive global batches of ``batch_size * w`` samples; rank ``r`` of ``w`` takes the
  contiguous slice ``[r * batch_size, (r + 1) * batch_size)`` of each. So the global batch of every iteration is
  the same samples in the same order whatever the number of processes (a 1-process run with the global batch size
  sees exactly what the ranks see together), and the loss groups of ``loss.group_size`` consecutive samples are
  the same. With ``batch_size=1`` this is ``DistributedSampler``'s order and shards (``order[r::w]``).
  ``set_epoch(epoch, start)`` skips the first ``start`` samples of this rank's shard, so a run resumed
  mid-epoch sees the same remaining samples as one that never stopped.
* The dataset seeds each sample's augmentation from (seed, epoch, index) (``TrainDataset``), so batches do not
  depend on the number of workers or on which worker loads a sample. ``WorkerInit`` additionally seeds
  ``random``, ``numpy`` and ``torch`` in each worker from (seed, epoch, worker id) for any code that still uses
  global RNGs.
* The loader gets its own ``torch.Generator`` so creating an iterator never consumes the global torch RNG.

Typical iteration-based training loop::

    loader = build_train_loader(train_set, batch_size=2, seed=cfg.seed, num_workers=8, rank=r, world_size=w)
    for iteration, batch in iterate_batches(loader, start_iteration=resumed_iteration):
        if iteration == max_iters: break
        ...
"""
import math
import random
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ResumableSampler(Sampler):
    """Deterministic per-epoch global permutation, each global batch sliced by rank, with a start offset (see the
    module docstring).

    Args:
        dataset_size: number of samples.
        seed: permutation seed.
        shuffle: False keeps ``0..n-1`` order (still sharded and padded).
        rank, world_size: this process's shard.
        drop_last: drop the tail that does not fill a global batch of ``batch_size * world_size`` instead of padding
            by repetition to a multiple of ``world_size``.
        batch_size: samples per rank per batch: the length of this rank's slice of each global batch.
    """

    def __init__(self, dataset_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, batch_size: int = 1):
        if dataset_size < 1:
            raise ValueError(f"dataset_size: expected >= 1, got {dataset_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank/world_size: expected 0 <= rank < world_size, got {rank}/{world_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        global_batch = batch_size * world_size
        if drop_last and dataset_size < global_batch:
            raise ValueError(f"drop_last: {dataset_size} samples cannot fill one global batch of {global_batch} "
                             f"({world_size} ranks x batch_size {batch_size})")
        self.dataset_size = dataset_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.batch_size = batch_size
        if drop_last:
            self.num_samples = dataset_size // global_batch * batch_size
        else:
            self.num_samples = math.ceil(dataset_size / world_size)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from sample ``start`` of this rank's shard (0 <= start <= num_samples)."""
        if epoch < 0:
            raise ValueError(f"epoch: expected >= 0, got {epoch}")
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start: expected 0..{self.num_samples}, got {start}")
        self.epoch = epoch
        self.start = start

    def epoch_indices(self, epoch: int) -> list:
        """This rank's full shard of ``epoch`` (``num_samples`` dataset indices)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + epoch)
            order = torch.randperm(self.dataset_size, generator=generator).tolist()
        else:
            order = list(range(self.dataset_size))
        total = self.num_samples * self.world_size
        if self.drop_last:
            order = order[:total]
        else:
            order = (order * math.ceil(total / len(order)))[:total]
        return [order[position] for position in self.global_positions()]

    def global_positions(self) -> List[int]:
        """Where this rank's shard lies in the epoch's global order: the contiguous slice ``[r*b, (r+1)*b)`` of each
        global batch of ``b*w`` samples; a tail shorter than a global batch is split in ``w`` equal slices."""
        total, width = self.num_samples * self.world_size, self.batch_size * self.world_size
        full = total - total % width
        positions = [start + self.rank * self.batch_size + offset
                     for start in range(0, full, width) for offset in range(self.batch_size)]
        tail = (total - full) // self.world_size
        return positions + list(range(full + self.rank * tail, full + (self.rank + 1) * tail))

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch = self.epoch
        for index in self.epoch_indices(epoch)[self.start:]:
            yield (epoch, index)

    def __len__(self) -> int:
        return self.num_samples - self.start


class WorkerInit:
    """``worker_init_fn``: seed ``random``, ``numpy`` and ``torch`` from (seed, sampler's epoch, worker id)."""

    def __init__(self, seed: int, sampler: Optional[ResumableSampler] = None):
        self.seed = seed
        self.sampler = sampler

    def __call__(self, worker_id: int) -> None:
        epoch = self.sampler.epoch if self.sampler is not None else 0
        state = np.random.SeedSequence([self.seed, epoch, worker_id]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[0]))
        torch.manual_seed(int(state[0]) << 32 | int(state[1]))


def build_train_loader(dataset: Dataset, batch_size: int, seed: int = 0, num_workers: int = 0, rank: int = 0,
                       world_size: int = 1, shuffle: bool = True, drop_last: bool = True,
                       pin_memory: Optional[bool] = None, persistent_workers: bool = False,
                       prefetch_factor: Optional[int] = None) -> DataLoader:
    """Training loader: ``ResumableSampler`` (reach it as ``loader.sampler``), seeded workers, ``drop_last``.

    With ``drop_last`` an epoch is ``dataset_size // (batch_size * world_size)`` global batches whatever the
    world size, each the same samples in the same order (see the module docstring).

    Args:
        dataset: usually a ``TrainDataset`` (its own ``seed`` drives augmentation; pass the same seed here).
        batch_size: samples per rank per step.
        seed: sampler order and worker seeding.
        pin_memory: default True when CUDA is available.
        prefetch_factor: batches prefetched per worker (only with ``num_workers > 0``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if drop_last and len(dataset) < batch_size * world_size:
        raise ValueError(f"batch_size: a global batch of {batch_size * world_size} ({world_size} process(es) x "
                         f"{batch_size}) exceeds the {len(dataset)} samples; with drop_last no batch would be "
                         f"produced")
    sampler = ResumableSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world_size=world_size,
                               drop_last=drop_last, batch_size=batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      drop_last=drop_last, worker_init_fn=WorkerInit(seed, sampler),
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=persistent_workers and num_workers > 0,
                      prefetch_factor=prefetch_factor if num_workers > 0 else None)


def build_val_loader(dataset: Dataset, batch_size: int = 1, num_workers: int = 0, rank: int = 0,
                     world_size: int = 1, pin_memory: Optional[bool] = None) -> DataLoader:
    """Evaluation loader: list order, rank ``r`` takes indices ``r, r+w, ...`` (no padding, so no image is
    counted twice across ranks), no drop_last. Keep ``batch_size=1`` for native-size images of varying size."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank/world_size: expected 0 <= rank < world_size, got {rank}/{world_size}")
    indices = list(range(rank, len(dataset), world_size))
    return DataLoader(dataset, batch_size=batch_size, sampler=indices, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      drop_last=False, worker_init_fn=WorkerInit(0), generator=torch.Generator().manual_seed(0))


def batches_per_epoch(loader: DataLoader) -> int:
    """Batches in a full epoch of ``loader``'s ``ResumableSampler`` shard (ignores any start offset)."""
    sampler = _sampler(loader)
    if loader.drop_last:
        return sampler.num_samples // loader.batch_size
    return math.ceil(sampler.num_samples / loader.batch_size)


def global_batch_slots(loader: DataLoader) -> range:
    """The places of this rank's samples in each global batch (``[r*b, (r+1)*b)``): with the iteration, the key of
    every random draw the training step makes for a sample, so the draws do not depend on the world size."""
    sampler = _sampler(loader)
    return range(sampler.rank * sampler.batch_size, (sampler.rank + 1) * sampler.batch_size)


def set_position(loader: DataLoader, epoch: int, batch: int = 0) -> None:
    """Make the next ``iter(loader)`` start at batch ``batch`` of epoch ``epoch``."""
    if not 0 <= batch <= batches_per_epoch(loader):
        raise ValueError(f"batch: expected 0..{batches_per_epoch(loader)}, got {batch}")
    _sampler(loader).set_epoch(epoch, start=min(batch * loader.batch_size, _sampler(loader).num_samples))


def iterate_batches(loader: DataLoader, start_iteration: int = 0) -> Iterator[Tuple[int, object]]:
    """Yield ``(iteration, batch)`` forever from ``start_iteration``, moving to the next epoch when one ends.

    Iteration ``i`` is batch ``i % batches_per_epoch`` of epoch ``i // batches_per_epoch``, so the batches from a
    resumed ``start_iteration`` equal those an uninterrupted run saw at the same iterations.
    """
    per_epoch = batches_per_epoch(loader)
    if per_epoch < 1:
        raise ValueError("loader: an epoch has no batches")
    if start_iteration < 0:
        raise ValueError(f"start_iteration: expected >= 0, got {start_iteration}")
    epoch, batch = divmod(start_iteration, per_epoch)
    iteration = start_iteration
    while True:
        set_position(loader, epoch, batch)
        for item in loader:
            yield iteration, item
            iteration += 1
        epoch, batch = epoch + 1, 0


def _sampler(loader: DataLoader) -> ResumableSampler:
    if not isinstance(loader.sampler, ResumableSampler):
        raise ValueError("loader: expected a loader from build_train_loader (its sampler is a ResumableSampler)")
    return loader.sampler
