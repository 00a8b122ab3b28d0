"""The one atomic file writer: a temporary file in the target's folder, flushed and fsynced, renamed over the
target (``os.replace`` is atomic on POSIX and Windows), then the folder fsynced. A crash or kill mid-write leaves
the previous file (or none), never a truncated one. Temporary names start with ``.tmp-`` so readers and cleanups
can recognise them.
"""
import os
import tempfile
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]
TMP_PREFIX = ".tmp-"


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None], durable: bool = True) -> str:
    """Create or replace ``path`` with what ``write(handle)`` writes to a binary handle; returns ``path``.

    Args:
        path: the final file name; its folder is created when missing.
        write: writes the whole content to the handle it is given.
        durable: fsync the file and its folder (checkpoints, caches); False still gives an all-or-nothing file, only
            without the guarantee that it survives a power loss (cheap enough for thousands of prediction PNGs).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp_path = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would (or the replaced file's).
        os.chmod(tmp_path, _mode_for(path))
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    if durable:
        fsync_dir(folder)
    return path


def atomic_write_bytes(path: PathLike, data: bytes, durable: bool = True) -> str:
    """``atomic_write`` of a bytes object."""
    return atomic_write(path, lambda handle: handle.write(data), durable=durable)


def atomic_write_text(path: PathLike, text: str, durable: bool = True) -> str:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def _mode_for(path: str) -> int:
    """The replaced file's permission bits, else 0666 minus the process umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def fsync_dir(folder: str) -> None:
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
