"""Sharded checkpoints through ``torch.distributed.checkpoint`` (DCP): one folder per checkpoint, every rank
writing its own shards, readable by any number of processes (DCP reshards on load; one process without a process
group reads it too).

A save writes into ``.tmp-<name>`` beside the final folder and rank 0 renames it once every rank has finished, so
an interrupted save never leaves a folder under the final name. The folder must be on a file system every rank sees
(multi-node runs: a shared run directory).
"""
import inspect
import os
import shutil
import warnings
from typing import Any, Dict

from toco_fast.io.atomic import TMP_PREFIX, PathLike, fsync_dir
from toco_fast.parallel.collectives import barrier, is_distributed, is_main_process

DCP_SUFFIX = ".dcp"


def dcp_api():
    """``torch.distributed.checkpoint`` with ``save`` / ``load``; RuntimeError saying what is missing."""
    try:
        import torch.distributed.checkpoint as dcp
    except ImportError:
        dcp = None
    if dcp is None or not hasattr(dcp, "save") or not hasattr(dcp, "load"):
        import torch

        raise RuntimeError(f"torch {torch.__version__} has no torch.distributed.checkpoint save/load (torch >= 2.4)")
    return dcp


def save_sharded(state: Dict[str, Any], folder: PathLike) -> str:
    """Save ``state`` (tensors, DTensors and plain values) as the DCP folder ``folder``, atomically; every rank
    calls it. Returns ``folder``."""
    dcp = dcp_api()
    folder = os.path.abspath(os.fspath(folder))
    parent = os.path.dirname(folder)
    staging = os.path.join(parent, TMP_PREFIX + os.path.basename(folder))
    if is_main_process():
        os.makedirs(parent, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # a save interrupted earlier
    barrier()
    _call(dcp.save, state, staging)
    barrier()
    if is_main_process():
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
        fsync_dir(parent)
    barrier()
    return folder


def load_sharded(state: Dict[str, Any], folder: PathLike) -> None:
    """Fill ``state`` (a template of the tensors to read, shaped and sharded as this run wants them) in place from
    the DCP folder ``folder``; every rank calls it."""
    dcp = dcp_api()
    folder = os.fspath(folder)
    if not os.path.isfile(os.path.join(folder, ".metadata")):
        raise FileNotFoundError(f"{folder}: not a complete sharded checkpoint (no .metadata)")
    _call(dcp.load, state, folder)


def _call(function, state: Dict[str, Any], folder: str) -> None:
    """``function(state, checkpoint_id=folder)``; outside a process group as a single process, said explicitly
    where this torch's DCP takes ``no_dist`` and without its warning that it assumes so."""
    if is_distributed():
        function(state, checkpoint_id=folder)
        return
    extra = {"no_dist": True} if "no_dist" in inspect.signature(function).parameters else {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed is .*single process")
        function(state, checkpoint_id=folder, **extra)
