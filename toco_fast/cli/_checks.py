"""Checks that ``evaluate`` and ``infer`` run before any image is read: the checkpoint's class count against the
split's, output paths that can be written, and the one-line report of a failure (once per sharded run).

Every check raises ValueError (one of ``toco_fast.cli.common.INPUT_ERRORS``) whose message starts with the
argument or file it is about.
"""
import os
import sys
import tempfile

from toco_fast.cli.common import INPUT_ERROR_STATUS, input_error_message, report_input_error
from toco_fast.config import Config
from toco_fast.data import ImageSource
from toco_fast.parallel.process_group import env_dist_info


def report_error(exc: BaseException, *, this_rank_only: bool = False) -> int:
    """Report bad input in one line; returns its exit status.

    Under ``torchrun`` every rank reaches the same verdict on arguments, checkpoint and dataset, so rank 0 alone
    prints it (``report_input_error``); ``this_rank_only`` marks an error that only this rank saw (an image of its
    own shard), printed by this rank whatever its number.
    """
    if this_rank_only and not env_dist_info().is_main:
        print(f"error: {input_error_message(exc)}", file=sys.stderr)
        return INPUT_ERROR_STATUS
    return report_input_error(exc)


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
    blocker = _nearest_existing(path)
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
    _require_writable_folder(_nearest_existing(os.path.dirname(os.path.abspath(path))), argument, path)


def _nearest_existing(path: str) -> str:
    """``path`` made absolute, or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _require_writable_folder(folder: str, argument: str, path: str) -> None:
    """Raise ValueError naming ``argument`` and ``path`` unless ``folder`` (``path`` or the ancestor it would be
    created in) is a folder where a file can be created (probed with a temporary file, removed at once)."""
    if not os.path.isdir(folder):
        raise ValueError(f"{argument}: {path}: cannot be created, {folder} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{argument}: {path}: {folder} is not writable ({exc.strerror or exc})") from None
