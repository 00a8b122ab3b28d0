"""Optional dependencies (the ``setup.py`` extras): import one, or fail with a one-line error saying how to get it.

``MissingExtraError`` is both an ``ImportError`` (what it is) and a ``ValueError`` (so the command lines report it
in one line with the bad-input status, like any other unusable argument).
"""
import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError, ValueError):
    """An optional package is not installed; the message names the extra that provides it."""


def require(module: str, extra: str, purpose: str, package: str = "") -> ModuleType:
    """``import module``, or raise :class:`MissingExtraError`: ``<purpose> needs <package>: pip install
    'toco_fast[<extra>]' (or pip install <package>)``; ``package`` defaults to the module's top-level name."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module.split(".")[0]
        raise MissingExtraError(f"{purpose} needs {package}, which is not installed ({exc}): pip install "
                                f"'toco_fast[{extra}]' (or pip install {package})") from None
