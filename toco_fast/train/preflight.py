"""The checks a training run passes before anything is built: ``check_run``.

``toco_fast.config.schema.validate`` checks what the config says on its own (ranges, crop sizes against the patch
size). This module checks what depends on the surroundings: the device, the number of processes, the run
directory, the pretrained file, the checkpoint a run resumes from, and the dataset's splits (opened, not decoded).
Each problem raises ``ConfigError`` naming the setting or file and what was expected, so ``python -m
toco_fast.train`` answers it in one line before any loader or model exists. The energy term's extension is checked
here too: with ``loss.w_reg > 0`` the reg term never vanishes silently.
"""
import os
from typing import Optional

from toco_fast.config import Config, ConfigError, DataConfig, ModelConfig, from_dict
from toco_fast.data import DataError, ImageSource, open_split
from toco_fast.io.checkpoint import Checkpoint, list_checkpoints
from toco_fast.io.paths import folder_write_problem, nearest_existing
from toco_fast.losses.energy import build_energy_loss
from toco_fast.model.pretrained import check_checkpoint_file
from toco_fast.parallel.process_group import resolve_device

# What a checkpoint needs beyond model / config / iteration to continue a run (``Trainer.state_dict``).
RESUME_KEYS = ("optimizer", "schedule", "rng")
# Model settings a resumed run cannot change: the checkpoint's weights are shaped by them.
RESUME_FIXED = ("num_classes", "backbone")


def run_dir_for(cfg: Config) -> str:
    """The directory a run writes to: ``train.run_dir``, else ``runs/<config name>``."""
    return cfg.train.run_dir or os.path.join("runs", cfg.name)


def check_run(cfg: Config, world_size: int = 1, resume: Optional[Checkpoint] = None) -> None:
    """Raise ConfigError unless ``cfg`` can start a run of
    ``world_size`` processes, continuing ``resume`` when given (else a fresh run).

    Reads no image and builds nothing; every process may call it.
    """
    _check_device(cfg)
    _check_batch_split(cfg, world_size)
    _check_aux_layer(cfg.model)
    _check_run_dir(run_dir_for(cfg), fresh=resume is None)
    if resume is None:
        _check_pretrained(cfg.model.pretrained)
    else:
        _check_resume(cfg, resume)
    _check_reg_extension(cfg)
    _check_splits(cfg, world_size)


def _check_reg_extension(cfg: Config) -> None:
    """With ``loss.w_reg > 0`` the compiled extension must be there: the reg term never vanishes silently."""
    try:
        build_energy_loss(cfg.loss)
    except RuntimeError as exc:
        raise ConfigError(f"loss.w_reg={cfg.loss.w_reg}: {exc}; to train without the reg term instead, pass "
                          f"--set loss.w_reg=0") from None


def _check_device(cfg: Config) -> None:
    try:
        resolve_device(cfg.train.device, argument="train.device")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_batch_split(cfg: Config, world_size: int) -> None:
    if cfg.data.batch_size % world_size:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is the global batch, split evenly among the "
                          f"{world_size} processes; expected a multiple of {world_size}")


def _check_aux_layer(model: ModelConfig) -> None:
    """``model.aux_layer`` must name a block of a mapping backbone (a timm name's depth is known to timm only)."""
    depth = model.backbone.get("depth") if isinstance(model.backbone, dict) else None
    if isinstance(depth, int) and depth > 0 and not -depth <= model.aux_layer < depth:
        raise ConfigError(f"model.aux_layer: expected a block index in [{-depth}, {depth - 1}] for the "
                          f"{depth}-block model.backbone, got {model.aux_layer}")


def _check_run_dir(run_dir: str, fresh: bool) -> None:
    """The run directory must be a directory (or creatable) and writable; a fresh run must not reuse one that holds
    another run's checkpoints."""
    existing = nearest_existing(run_dir)
    if not os.path.isdir(existing):
        where = "" if existing == os.path.abspath(run_dir) else f" ({existing} is in its way)"
        raise ConfigError(f"train.run_dir: {run_dir} is a file{where}; expected a directory, choose another "
                          f"--run-dir")
    problem = folder_write_problem(existing)
    if problem:
        raise ConfigError(f"train.run_dir: {problem}; expected a directory this user can write to, choose another "
                          f"--run-dir")
    if fresh and list_checkpoints(run_dir):
        raise ConfigError(f"run dir {run_dir!r} already holds checkpoints: pass --resume {run_dir} to continue it "
                          f"or choose another --run-dir")


def _check_pretrained(path: Optional[str]) -> None:
    if path is None:
        return
    try:
        check_checkpoint_file(path)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _check_resume(cfg: Config, checkpoint: Checkpoint) -> None:
    """A resumed checkpoint holds the trainer's state and was trained with this config's model."""
    missing = [key for key in RESUME_KEYS if checkpoint.state.get(key) is None]
    if missing:
        raise ConfigError(f"--resume {checkpoint.path}: the checkpoint has no {' / '.join(missing)} state; "
                          f"expected a checkpoint written by python -m toco_fast.train")
    saved = from_dict(checkpoint.state["config"]).model
    for name in RESUME_FIXED:
        ours, theirs = getattr(cfg.model, name), getattr(saved, name)
        if ours != theirs:
            raise ConfigError(f"--resume {checkpoint.path}: model.{name} is {ours!r} but the checkpoint was "
                              f"trained with {theirs!r}; expected the same (a resumed run keeps its model)")


def _check_splits(cfg: Config, world_size: int) -> None:
    """The training split fills a batch on every process; the splits have ``model.num_classes`` classes."""
    data = cfg.data
    train = _open(data, data.train_split)
    _check_classes(cfg, train, "data.train_split")
    # An epoch is made of whole global batches (the sampler drops the remainder), so one must fit in the split.
    if data.batch_size > len(train):
        raise ConfigError(f"data.batch_size: {data.batch_size} is larger than the training split {train.split!r} "
                          f"({len(train)} images at {train.root}); expected at most {len(train)}")
    if cfg.eval.enabled:
        _check_classes(cfg, _open(data, data.val_split), "data.val_split")


def _open(data: DataConfig, split: str) -> ImageSource:
    """The split, or ConfigError naming the dataset settings and the file at fault (every process sees the same)."""
    try:
        return open_split(data, split)
    except DataError as exc:
        raise ConfigError(f"{exc} (the dataset is data.dataset={data.dataset!r}, data.root={data.root!r}, split "
                          f"{split!r}; validate it with --check-data)") from None


def _check_classes(cfg: Config, source: ImageSource, setting: str) -> None:
    if source.num_classes != cfg.model.num_classes:
        raise ConfigError(f"model.num_classes: {cfg.model.num_classes}, but the {source.kind} split "
                          f"{source.split!r} ({setting}) at {source.root} has {source.num_classes} classes, "
                          f"background included; expected model.num_classes={source.num_classes}")
