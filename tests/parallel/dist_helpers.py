"""Shared by the multi-process tests: run jobs in a gloo world of N CPU processes (``torch.multiprocessing`` spawn,
the ``torchrun`` environment variables set), the tiny training config of those tests, a run's final model."""
import os
import socket
import sys
import time
from typing import Callable, Dict, Sequence

import torch
import torch.multiprocessing as mp

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS_DIR, "train"))

from train_helpers import tiny_cfg  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_world(world_size: int, jobs: Sequence[Callable[[], object]], timeout: float = 120.0) -> None:
    """Run the picklable zero-argument ``jobs`` one after the other in each of ``world_size`` spawned processes,
    each job in a fresh ``torchrun``-like environment (its own rendezvous port: a job may create and destroy the
    process group). The processes are killed, and the test fails, after ``timeout`` seconds."""
    ports = [free_port() for _ in jobs]
    context = mp.start_processes(_entry, args=(world_size, list(jobs), ports), nprocs=world_size,
                                 start_method="spawn", join=False)
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{world_size}-process jobs still running after {timeout:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()


def _entry(rank: int, world_size: int, jobs, ports) -> None:
    torch.set_num_threads(1)
    for job, port in zip(jobs, ports):
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                          LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        job()


def dist_cfg(root, *overrides):
    """``tiny_cfg`` with a global batch of 4 (two groups of ``loss.group_size`` 2), every loss term on by iteration 4
    (seg / reg from 2, PTC / CTC from 4, so DDP meets three phases), 8 iterations, checkpoints at 4 and 8."""
    return tiny_cfg(root, "data.batch_size=4", "loss.seg_start_iter=1", "loss.contrast_start_iter=3",
                    "train.max_iters=8", "train.ckpt_iters=4", "train.log_iters=4", "train.num_threads=1",
                    "eval.enabled=false", *overrides)


class Train:
    """A picklable job: ``train(dist_cfg(root, *overrides), run_dir=run_dir, resume=resume)``."""

    def __init__(self, root, run_dir, *overrides, resume=None):
        self.root, self.run_dir, self.overrides, self.resume = str(root), str(run_dir), overrides, resume

    def __call__(self):
        from toco_fast.train.loop import train

        return train(dist_cfg(self.root, *self.overrides), run_dir=self.run_dir,
                     resume=None if self.resume is None else str(self.resume))


def model_state(path) -> Dict[str, torch.Tensor]:
    from toco_fast.io.checkpoint import load_checkpoint

    return load_checkpoint(path)["model"]
