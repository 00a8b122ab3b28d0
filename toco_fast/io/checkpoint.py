"""Checkpoints: atomic writes, discovery in a run directory, loading with a clear error.

A checkpoint is a dict holding at least::

    {"model": ToCo.state_dict() (teacher projection head included), "config": effective config (plain dict),
     "iteration": number of completed iterations}

and, when written by the trainer, ``optimizer``, ``scaler``, ``schedule``, ``rng`` (torch / CUDA / numpy / Python
states) and ``data`` (the sampler position), so that ``--resume`` continues bit for bit. Every entry is made of
tensors and plain Python values, so files load with ``torch.load(weights_only=True)``.

Files live in ``<run_dir>/checkpoints/iter_<iteration>.pt``. A write goes to a temporary file in the same folder,
is flushed and fsynced, then renamed over the final name (``toco_fast.io.atomic``), so a crash mid-write leaves the
previous checkpoints intact and never a truncated ``iter_*.pt``.

A run with sharded state (FSDP) also writes ``iter_<iteration>.dcp/``, its model and optimizer shards
(``toco_fast.io.dcp``), before the file; the file then holds the consolidated model, and in place of the optimizer
state the folder's name: ``"optimizer": {"sharded": "iter_<iteration>.dcp"}``. The file is written last, so a
checkpoint that discovery finds is complete.
"""
import errno
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from toco_fast.io.atomic import TMP_PREFIX, PathLike, atomic_write
from toco_fast.io.dcp import DCP_SUFFIX

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d+)\.pt$")


def checkpoint_path(run_dir: PathLike, iteration: int) -> str:
    return os.path.join(os.fspath(run_dir), CHECKPOINT_DIR, f"iter_{iteration:07d}.pt")


def sharded_folder(path: PathLike) -> str:
    """The DCP folder that belongs to checkpoint file ``path`` (``iter_N.pt`` -> ``iter_N.dcp``)."""
    return os.path.splitext(os.fspath(path))[0] + DCP_SUFFIX


def list_checkpoints(run_dir: PathLike) -> List[Tuple[int, str]]:
    """``(iteration, path)`` of the complete checkpoints in ``run_dir``, oldest first (temporary files skipped)."""
    folder = os.path.join(os.fspath(run_dir), CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found)


def latest_checkpoint(run_dir: PathLike) -> Optional[str]:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def resolve_checkpoint(path: PathLike) -> str:
    """A checkpoint file as given, or the latest checkpoint of a run directory."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"{path}: run directory has no checkpoint in {CHECKPOINT_DIR}/")
        return latest
    raise FileNotFoundError(f"{path}: no such checkpoint file or run directory")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission, ...); the message names the file and the
    cause. The checkpoints written before it are intact."""


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> str:
    """Write ``state`` to ``path`` atomically (``toco_fast.io.atomic``); returns ``path``.

    Raises:
        CheckpointWriteError: the write failed; the message names ``path`` and the operating system's reason
            (e.g. "no space left on device") rather than torch's ("unexpected pos ...").
    """
    try:
        return atomic_write(path, lambda handle: torch.save(state, handle))
    except (OSError, RuntimeError) as exc:
        raise CheckpointWriteError(f"{os.fspath(path)}: cannot save the checkpoint: {_write_failure(exc)}") from exc


def _write_failure(exc: BaseException) -> str:
    """The reason a write failed: the first OS error in the exception chain (torch's zip writer reports a failed
    write as a RuntimeError whose context is the OSError), else the exception itself."""
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            reason = os.strerror(seen.errno)
            return f"{reason[:1].lower()}{reason[1:]} (errno {errno.errorcode.get(seen.errno, seen.errno)})"
        seen = seen.__cause__ or seen.__context__
    return f"{type(exc).__name__}: {exc}"


def prune_checkpoints(run_dir: PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (their sharded folders too), the temporary files and folders
    left by a crash, and sharded folders whose file was never written (a save interrupted between the two)."""
    found = list_checkpoints(run_dir)
    for _, path in found[:-keep] if keep > 0 else found:
        os.remove(path)
        shutil.rmtree(sharded_folder(path), ignore_errors=True)
    folder = os.path.join(os.fspath(run_dir), CHECKPOINT_DIR)
    kept = {sharded_folder(path) for _, path in list_checkpoints(run_dir)}
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        orphan = name.endswith(DCP_SUFFIX) and path not in kept
        if name.startswith(TMP_PREFIX) or orphan:
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Load a checkpoint file (or a run directory's latest) and check it has model, config and iteration."""
    file_path = resolve_checkpoint(path)
    try:
        state = torch.load(file_path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a foreign or corrupt file: say which one
        raise ValueError(f"{file_path}: not a readable toco_fast checkpoint ({type(exc).__name__}: {exc})") from exc
    missing = [key for key in ("model", "config", "iteration") if key not in state]
    if missing:
        raise ValueError(f"{file_path}: checkpoint lacks {', '.join(missing)}")
    folder = _sharded_folder_of(file_path, state)
    if folder is not None and not os.path.isfile(os.path.join(folder, ".metadata")):
        raise ValueError(f"{file_path}: its sharded state {folder} is missing or incomplete; resume from an earlier "
                         f"checkpoint")
    return state


def _sharded_folder_of(path: str, state: Dict[str, Any]) -> Optional[str]:
    """The DCP folder a checkpoint file names in place of its optimizer state (a sharded run's), else None."""
    optimizer = state.get("optimizer")
    name = optimizer.get("sharded") if isinstance(optimizer, dict) else None
    return os.path.join(os.path.dirname(os.path.abspath(path)), name) if name else None


@dataclass
class Checkpoint:
    """A checkpoint read once: where it lives and its state (see the module docstring)."""

    path: str
    state: Dict[str, Any]

    @property
    def sharded_folder(self) -> Optional[str]:
        """The DCP folder of the model and optimizer shards, for a checkpoint of a sharded (FSDP) run; else None."""
        return _sharded_folder_of(self.path, self.state)

    @property
    def run_dir(self) -> str:
        """The run directory holding ``checkpoints/<this file>``."""
        return os.path.dirname(os.path.dirname(os.path.abspath(self.path)))


def open_checkpoint(path: PathLike) -> Checkpoint:
    """Resolve ``path`` (a file or a run directory's latest) and load it to the CPU, once."""
    file_path = resolve_checkpoint(path)
    return Checkpoint(file_path, load_checkpoint(file_path, map_location="cpu"))
