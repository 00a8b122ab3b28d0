"""What the command lines share: dataset arguments and the source they name, the data-loading default, the
process group of a sharded run, bad input reported in one line with its exit status, JSON output."""
import argparse
import contextlib
import json
import os
import re
import sys
from typing import Any, Dict, Iterator, Optional

import torch

from toco_fast.config import Config
from toco_fast.data import KINDS, ImageSource, open_source
from toco_fast.io.atomic import atomic_write_text
from toco_fast.io.checkpoint import CheckpointWriteError
from toco_fast.io.paths import folder_write_problem, nearest_existing
from toco_fast.parallel.collectives import barrier
from toco_fast.parallel.process_group import DistInfo, cleanup_distributed, env_dist_info, init_distributed

# Exceptions that mean bad input or surroundings (missing files, size mismatches, bad arguments, a full disk): reported
# in one line, exit status 2. ConfigError and DataError are ValueErrors; an error a DataLoader worker raised comes back
# with its own type.
INPUT_ERRORS = (FileNotFoundError, ValueError, CheckpointWriteError)
INPUT_ERROR_STATUS = 2
# How PyTorch re-raises a DataLoader worker's exception in the main process: the worker's traceback pasted in.
_WORKER_ERROR = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def write_json(path: str, payload: Dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically (folders created)."""
    atomic_write_text(os.path.abspath(path), json.dumps(payload, indent=2) + "\n")


def input_error_message(exc: BaseException) -> str:
    """``exc``'s message in one line; for an error raised in a DataLoader worker, only the worker exception's own
    message (not the traceback PyTorch pastes into it)."""
    text = str(exc)
    worker = _WORKER_ERROR.match(text)
    if worker:
        text = _original_message(text, worker.group(1))
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _original_message(text: str, type_name: str) -> str:
    """The message on the pasted traceback's last ``[module.]Type: message`` line."""
    line_of_type = re.compile(rf"^(?:[\w.]+\.)?{re.escape(type_name)}(?:: (.*))?$")
    for line in reversed(text.splitlines()):
        match = line_of_type.match(line)
        if match:
            return match.group(1) or type_name
    return text


def report_input_error(exc: BaseException, hint: str = "", any_rank: bool = False) -> int:
    """Print ``error: <message> (<hint>)`` in one line (``input_error_message``) to stderr; returns the exit status
    of bad input.

    Only the main process (``RANK`` 0) prints, so a torchrun world whose ranks all reach the same verdict prints it
    once; ``any_rank`` prints from this process whatever its rank (an error only it saw, e.g. in its own shard).
    """
    if any_rank or env_dist_info().is_main:
        print(f"error: {input_error_message(exc)}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    return INPUT_ERROR_STATUS


def default_workers() -> int:
    """Data-loading processes when ``--workers`` is not given: one per CPU, at most 8."""
    return min(8, os.cpu_count() or 1)


@contextlib.contextmanager
def sharded_run(device: torch.device) -> Iterator[DistInfo]:
    """Join the ``torchrun`` process group (if any) for the body and leave it afterwards.

    When the body succeeds, all ranks synchronise before the group is torn down (a rank that leaves while a peer
    still uses the group can abort it). A world of one never touches ``torch.distributed``.
    """
    info = init_distributed(device)
    try:
        yield info
        barrier()
    finally:
        cleanup_distributed()


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """``--dataset/--root/--split/...``: which split to read (defaults come from a checkpoint's config)."""
    group = parser.add_argument_group("dataset (defaults: the checkpoint's data section)")
    group.add_argument("--dataset", choices=KINDS, help="dataset layout")
    group.add_argument("--root", help="dataset root")
    group.add_argument("--split", help="split / list name (default: the config's data.val_split, else val)")
    group.add_argument("--lists-dir", help="voc/coco: folder of the split lists (default ROOT/ImageSets/Segmentation)")
    group.add_argument("--image-root", help="coco: folder holding train2014/ and val2014/ (default ROOT)")
    group.add_argument("--mask-root", help="coco: folder holding the mask sub-folders (default "
                       "ROOT/SegmentationClass); folder: the masks folder (default ROOT/masks)")
    group.add_argument("--ignore-index", type=int, default=None, help="mask value not counted (default 255)")


# CLI flag -> keyword argument of the source class, per dataset kind.
_SOURCE_FLAGS = {
    "voc": {"lists_dir": "lists_dir"},
    "coco": {"lists_dir": "lists_dir", "image_root": "image_root", "mask_root": "mask_root"},
    "folder": {"mask_root": "mask_dir"},
    "synthetic": {},
}


def source_from_args(args: argparse.Namespace, config: Optional[Config] = None) -> ImageSource:
    """The ``toco_fast.data`` source named by the dataset arguments, falling back to ``config.data`` (a
    checkpoint's config).

    The config's ``source_options`` apply when the dataset and root are the config's own.
    """
    data_cfg = config.data if config is not None else None
    kind = args.dataset or (data_cfg.dataset if data_cfg else None)
    root = args.root or (data_cfg.root if data_cfg else None)
    split = args.split or (data_cfg.val_split if data_cfg else "val")
    if kind is None or root is None:
        raise ValueError("--dataset and --root are required (there is no checkpoint config to take them from)")
    if kind not in _SOURCE_FLAGS:
        raise ValueError(f"--dataset: expected one of {KINDS}, got {kind!r}")
    same_dataset = data_cfg is not None and kind == data_cfg.dataset and root == data_cfg.root
    options = dict(data_cfg.source_options) if same_dataset else {}
    for flag in ("lists_dir", "image_root", "mask_root"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag not in _SOURCE_FLAGS[kind]:
            raise ValueError(f"--{flag.replace('_', '-')}: not an option of the {kind} dataset")
        options[_SOURCE_FLAGS[kind][flag]] = value
    ignore_index = args.ignore_index if args.ignore_index is not None else (
        data_cfg.ignore_index if data_cfg else None)
    if ignore_index is not None and kind != "synthetic":
        options["ignore_index"] = ignore_index
    return open_source(kind, root, split, **options)


def check_class_count(ckpt: str, config: Config, source: ImageSource) -> None:
    """Raise ValueError unless the checkpoint's ``model.num_classes`` equals the split's class count."""
    have, want = config.model.num_classes, source.num_classes
    if have != want:
        raise ValueError(f"{ckpt}: the checkpoint's model predicts {have} classes (model.num_classes) but the "
                         f"{source.kind} dataset at {source.root}, split {source.split!r}, has {want} classes; "
                         "expected the dataset the checkpoint was trained on (--dataset/--root)")


def prepare_out_dir(path: str, argument: str) -> str:
    """Create the output folder ``path`` (parents included) and check that files can be written in it.

    Returns ``path``. Raises ValueError naming ``argument`` and ``path`` when it exists as a file, cannot be
    created, or is not writable.
    """
    blocker = nearest_existing(path)
    if blocker == os.path.abspath(path) and not os.path.isdir(blocker):
        raise ValueError(f"{argument}: {path}: exists and is not a folder (expected an output folder)")
    _require_writable_folder(blocker, argument, path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{argument}: {path}: cannot create the output folder ({exc.strerror or exc})") from None
    _require_writable_folder(path, argument, path)
    return path


def check_out_file(path: str, argument: str) -> None:
    """Raise ValueError naming ``argument`` and ``path`` unless a file can later be written at ``path``: it is not
    a folder, and its folder exists and is writable or can be created. Creates nothing."""
    if os.path.isdir(path):
        raise ValueError(f"{argument}: {path}: is a folder (expected a file path, e.g. "
                         f"{os.path.join(path, 'metrics.json')})")
    _require_writable_folder(nearest_existing(os.path.dirname(os.path.abspath(path))), argument, path)


def _require_writable_folder(folder: str, argument: str, path: str) -> None:
    """Raise ValueError naming ``argument`` and ``path`` unless ``folder`` (``path`` or the ancestor it would be
    created in) is a folder where a file can be created."""
    problem = folder_write_problem(folder)
    if problem:
        prefix = "cannot be created, " if not os.path.isdir(folder) else ""
        raise ValueError(f"{argument}: {path}: {prefix}{problem}")
