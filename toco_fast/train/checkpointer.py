"""Checkpoints of a ``Trainer``: where each part of its state goes, and how any world size reads it back.

* Replicated training (one process, DDP): rank 0 writes ``Trainer.state_dict()`` -- model, optimizer, schedule,
  scaler, RNG, data position, log window -- as the single file ``checkpoints/iter_<N>.pt``, as a one-process run
  always has; a one-process resume is bit-exact.
* Sharded training (FSDP): every rank first writes its model and optimizer shards with DCP into
  ``checkpoints/iter_<N>.dcp/`` (``toco_fast.io.dcp``); then rank 0 writes ``iter_<N>.pt`` with the consolidated
  model (gathered from the shards), the rest of the trainer state, and the folder's name in place of the optimizer.

Either way ``iter_<N>.pt`` is what ``evaluate`` / ``infer`` load (``toco_fast.model.factory.model_from_checkpoint``),
and it is written last, atomically: a kill during a save leaves the previous checkpoints as the latest complete one
(``toco_fast.io.checkpoint``).

Resuming works across world sizes and modes: the model and optimizer come from the DCP folder when the checkpoint has
one (DCP reshards them for this run, sharded or not), else from the file (sharded here by
``toco_fast.parallel.state.load_full_state`` when this run uses FSDP). The data order, the crops and the ratio losses
do not depend on the world size, so a run resumed with another number of processes continues the same sequence.
"""
import os
from typing import Dict, Optional

import torch

from toco_fast.data import batches_per_epoch
from toco_fast.io.checkpoint import (
    Checkpoint,
    checkpoint_path,
    prune_checkpoints,
    save_checkpoint,
    sharded_folder,
)
from toco_fast.io.dcp import load_sharded, save_sharded
from toco_fast.parallel.collectives import barrier, is_distributed
from toco_fast.parallel.state import is_sharded, load_sharded_state, sharded_state
from toco_fast.train.finite import check_finite_state


def save_trainer(trainer) -> str:
    """Write the checkpoint of ``trainer``'s current iteration (every rank calls it); returns the file's path.

    Raises RuntimeError on every rank, writing nothing, when the model or optimizer holds non-finite values.
    """
    path = checkpoint_path(trainer.run_dir, trainer.iteration)
    _check_finite(trainer, path)
    if is_sharded(trainer.model):
        folder = sharded_folder(path)
        save_sharded(sharded_state(trainer.model, trainer.optimizer), folder)
        state = trainer.state_dict(optimizer=False)
        state["optimizer"] = {"sharded": os.path.basename(folder)}
    else:
        state = trainer.state_dict()
    if trainer.info.is_main:
        save_checkpoint(path, state)
        prune_checkpoints(trainer.run_dir, trainer.cfg.train.keep_checkpoints)
        trainer.logger.info(f"checkpoint: {path}")
    barrier()
    return path


def restore_trainer(trainer, checkpoint: Checkpoint) -> None:
    """Load ``checkpoint`` (written by any world size, sharded or not) into ``trainer`` (every rank calls it)."""
    folder = checkpoint.sharded_folder
    if folder is None:
        trainer.load_state_dict(checkpoint.state)
        return
    template = sharded_state(trainer.model, trainer.optimizer)
    load_sharded(template, folder)
    load_sharded_state(trainer.model, trainer.optimizer, template)
    trainer.load_progress(checkpoint.state)


def _check_finite(trainer, path: str) -> None:
    """``check_finite_state`` on every rank (each holds a full replica, or its shards), with one verdict for all."""
    try:
        check_finite_state(trainer.model, trainer.optimizer, path)
        problem = None
    except RuntimeError as exc:
        problem = exc
    if is_distributed():
        verdict = torch.tensor([float(problem is not None)], device=trainer.device)
        torch.distributed.all_reduce(verdict, op=torch.distributed.ReduceOp.MAX)
        if verdict.item() and problem is None:
            problem = RuntimeError(f"{path}: not written, another process holds non-finite model or optimizer "
                                   f"values; the last checkpoint is kept")
    if problem is not None:
        raise problem


def data_position(loader, iteration: int) -> Dict[str, int]:
    """Where the data stream stands after ``iteration`` batches (the resumable loader is indexed by iteration)."""
    per_epoch = batches_per_epoch(loader)
    epoch, batch = divmod(iteration, per_epoch)
    return {"epoch": epoch, "batch": batch, "batches_per_epoch": per_epoch}


def check_data_position(saved: Optional[Dict[str, int]], loader, iteration: int, logger) -> None:
    """Warn when the checkpoint's epoch length differs from this run's (another dataset or global batch size)."""
    now = data_position(loader, iteration)
    if saved and saved.get("batches_per_epoch") != now["batches_per_epoch"]:
        logger.warning(f"resume: an epoch now has {now['batches_per_epoch']} batches, the checkpoint was written "
                       f"with {saved.get('batches_per_epoch')} (dataset or batch size changed); the data order will "
                       f"differ from the interrupted run")
