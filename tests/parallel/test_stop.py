"""A stop signal to one process of a 2-process run (gloo, CPU): the loop reads the device only at sync points, so
the processes agree on the stop at the next one, write one checkpoint there together and return; resuming it ends
bit-exactly where the uninterrupted run ends."""
import os
import signal

import torch
from dist_helpers import Train, model_state, run_world

from toco_fast.io.checkpoint import list_checkpoints

# Sync points (log lines) at iterations 3, 6 and 8; no regular checkpoint before the end.
SYNC_EVERY_3 = ("train.dist=ddp", "train.log_iters=3", "train.ckpt_iters=8")


class SignalRankOneDuring(Train):
    """``Train``, and rank 1 sends itself SIGTERM while it computes iteration ``iteration``."""

    def __init__(self, root, run_dir, iteration, *overrides):
        super().__init__(root, run_dir, *overrides)
        self.iteration = iteration

    def __call__(self):
        from toco_fast.train import step as step_module

        real = step_module.train_step

        def step(*args, n_iter, **kwargs):
            if n_iter + 1 == self.iteration and os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGTERM)
            return real(*args, n_iter=n_iter, **kwargs)

        step_module.train_step = step
        try:
            return super().__call__()
        finally:
            step_module.train_step = real


def test_a_signal_to_one_process_stops_both_at_the_next_sync_point_and_resumes_exactly(synthetic_root, tmp_path):
    stopped, whole = tmp_path / "stopped", tmp_path / "whole"
    run_world(2, [SignalRankOneDuring(synthetic_root, stopped, 4, *SYNC_EVERY_3),
                  Train(synthetic_root, whole, *SYNC_EVERY_3)])
    assert [it for it, _ in list_checkpoints(stopped)] == [6]  # signalled in 4, agreed at the sync point 6
    log = (stopped / "train.log").read_text()
    assert "stopped by SIGTERM after iteration 6" in log and "iter 6/8" in log and "iter 8/8" not in log

    run_world(2, [Train(synthetic_root, stopped, *SYNC_EVERY_3, resume=stopped)])
    resumed, reference = model_state(stopped), model_state(whole)
    assert all(torch.equal(resumed[name], reference[name]) for name in reference), "resume must be bit-exact"
