"""Whether a file or folder can be written where a command will write it, asked before the work starts."""
import os
import tempfile
from typing import Optional


def nearest_existing(path: str) -> str:
    """``path`` made absolute, or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def folder_write_problem(folder: str) -> Optional[str]:
    """None when ``folder`` is a folder where a file can be created (probed with a temporary file, removed at
    once: permission bits do not stop root, a read-only mount does), else what is wrong, e.g. ``"X is not a
    folder"``."""
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{folder} is not writable ({exc.strerror or exc})"
    return None
