"""``open_source``: one entry point from (kind, root, split) to an ``ImageSource``, for configs and CLIs."""
from typing import Tuple

from .coco import COCOSource
from .folder import FolderSource
from .source import ImageSource
from .synthetic import open_synthetic
from .voc import VOCSource

KINDS: Tuple[str, ...] = ("voc", "coco", "folder", "synthetic")


def open_source(kind: str, root: str, split: str, **options) -> ImageSource:
    """Open one split.

    Args:
        kind: ``"voc"`` (``VOCSource``), ``"coco"`` (``COCOSource``), ``"folder"`` (``FolderSource``) or
            ``"synthetic"`` (a generated set: VOC layout plus its meta file).
        root: dataset root.
        split: list / CSV name (``train_aug``, ``val``, ``train``, ...).
        options: keyword arguments of that source class (e.g. ``lists_dir``), none for ``synthetic``.

    Raises:
        ValueError: unknown kind; DataError: missing root, list or listed image.
    """
    if kind == "voc":
        return VOCSource(root, split, **options)
    if kind == "coco":
        return COCOSource(root, split, **options)
    if kind == "folder":
        return FolderSource(root, split, **options)
    if kind == "synthetic":
        if options:
            raise ValueError(f"options: the synthetic kind takes none, got {sorted(options)}")
        return open_synthetic(root, split)
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
