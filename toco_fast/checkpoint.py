"""Checkpoints: atomic writes, discovery in a run directory, RNG capture, and model rebuilding for evaluation.

A checkpoint is a dict holding at least::

    {"model": ToCo.state_dict() (teacher projection head included), "config": effective config (plain dict),
     "iteration": number of completed iterations}

and, when written by the trainer, ``optimizer``, ``scaler``, ``schedule``, ``rng`` (torch / CUDA / numpy / Python
states) and ``data`` (the sampler position), so that ``--resume`` continues bit for bit. Every entry is made of
tensors and plain Python values, so files load with ``torch.load(weights_only=True)``.

Files live in ``<run_dir>/checkpoints/iter_<iteration>.pt``. A write goes to a temporary file in the same folder,
is flushed and fsynced, then renamed over the final name (``os.replace`` is atomic on POSIX and Windows), so a crash
mid-write leaves the previous checkpoints intact and never a truncated ``iter_*.pt``.
"""
import os
import random
import re
import tempfile
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d+)\.pt$")

PathLike = Union[str, os.PathLike]


def checkpoint_path(run_dir: PathLike, iteration: int) -> str:
    return os.path.join(os.fspath(run_dir), CHECKPOINT_DIR, f"iter_{iteration:07d}.pt")


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


def save_checkpoint(path: PathLike, state: Dict[str, Any]) -> str:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + rename); returns ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_dir(folder)
    return path


def _fsync_dir(folder: str) -> None:
    """Persist the rename itself (POSIX); directories cannot be opened this way on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prune_checkpoints(run_dir: PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (and temporary files left by a crash)."""
    found = list_checkpoints(run_dir)
    for _, path in found[:-keep] if keep > 0 else found:
        os.remove(path)
    folder = os.path.join(os.fspath(run_dir), CHECKPOINT_DIR)
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith(".tmp-"):
            os.remove(os.path.join(folder, name))


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
    return state


def capture_rng_state() -> Dict[str, Any]:
    """Torch (CPU and every CUDA device), numpy and Python RNG states as tensors and plain values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["state"]), py_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def build_model(model_cfg: Dict[str, Any], pretrained: Optional[str] = None) -> torch.nn.Module:
    """A ``ToCo`` model from a ``model`` config section (``toco_fast.config.ModelConfig`` as a dict).

    ``pretrained`` overrides the section's backbone weights path (None: random init; the checkpoint loader passes
    None because the state dict carries the weights).
    """
    from toco_fast.model import ToCo

    kwargs = dict(model_cfg)
    kwargs.pop("pretrained", None)
    return ToCo(pretrained=pretrained, **kwargs)


def build_model_from_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu"
                                ) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild the trained ToCo model (eval mode, on ``device``) and return it with its config dict.

    Args:
        path: a checkpoint file, or a run directory (its latest checkpoint is used).
        device: where the model goes.
    """
    state = load_checkpoint(path, map_location="cpu")
    config = state["config"]
    model = build_model(config["model"], pretrained=None)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config
