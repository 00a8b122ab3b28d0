"""The files and records of an inference run: label PNGs (palette, id and colour), reading them back, and
unreadable images (an error record instead of a ``DataLoader`` worker traceback, then a stop or a skipped list).

Every file is written all or nothing (``toco_fast.io.atomic``), so an interrupted run never leaves a truncated PNG.
Wrap a dataset in :class:`CatchReadErrors` so that a ``DataError`` comes back as an item; the runner then stops with
:class:`UnreadableImageError` (the file's own one-line message) or, given a ``skipped`` list, records the image and
goes on (``write_skipped_list``).
"""
import os
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from toco_fast.data import DataError, EvalDataset, voc_palette
from toco_fast.io.atomic import atomic_write, atomic_write_text

__all__ = ["Skipped", "save_label_png", "save_id_png", "save_color_png", "read_label_png", "CatchReadErrors",
           "UnreadableImageError", "skipped_list_path", "write_skipped_list"]

# (image name, reason) of an image that could not be read
Skipped = Tuple[str, str]


class UnreadableImageError(DataError):
    """An image (or its mask) of the split could not be read; the message is the ``DataError``'s own, starting with
    the file. Only the rank whose shard holds the image sees it."""


class CatchReadErrors(torch.utils.data.Dataset):
    """An ``EvalDataset`` whose unreadable items come back as ``{"name": name, "error": message}`` instead of
    raising the ``DataError`` (inside a ``DataLoader`` worker that would become a multi-line worker traceback);
    readable items are the dataset's own."""

    def __init__(self, dataset: EvalDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, object]:
        try:
            return self.dataset[index]
        except DataError as exc:
            return {"name": self.dataset.source.names[index], "error": str(exc)}


def skipped_list_path(out_dir: str, rank: int = 0, world_size: int = 1) -> str:
    """Where a rank lists its skipped images: ``skipped.txt`` in a world of one, else ``skipped_rank<r>.txt`` (each
    rank of a sharded run writes its own)."""
    name = "skipped.txt" if world_size == 1 else f"skipped_rank{rank}.txt"
    return os.path.join(out_dir, name)


def write_skipped_list(path: str, skipped: Sequence[Skipped]) -> str:
    """Write ``name<TAB>reason`` per skipped image (an empty file when none; tabs and line breaks in a reason become
    spaces); returns ``path``."""
    lines = [f"{name}\t{' '.join(reason.split())}\n" for name, reason in skipped]
    return atomic_write_text(path, "".join(lines), durable=False)


def save_label_png(path: str, label: np.ndarray) -> None:
    """Write a ``[H, W]`` label map (values 0..255) as an indexed PNG with the VOC palette (folders created)."""
    from PIL import Image

    label = _check_label(label)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette(voc_palette().reshape(-1).tolist())
    atomic_write(path, lambda handle: image.save(handle, format="PNG"), durable=False)


def save_id_png(path: str, label: np.ndarray) -> None:
    """Write a ``[H, W]`` label map (values 0..255) as a plain 8-bit grey PNG of class ids (what a fully supervised
    segmenter's data loader reads), folders created."""
    from PIL import Image

    label = _check_label(label)
    atomic_write(path, lambda handle: Image.fromarray(label, mode="L").save(handle, format="PNG"), durable=False)


def save_color_png(path: str, label: np.ndarray) -> None:
    """Write a ``[H, W]`` label map as an RGB PNG in the VOC colours (255, uncertain: (224, 224, 192))."""
    from PIL import Image

    colours = voc_palette()[_check_label(label)]
    atomic_write(path, lambda handle: Image.fromarray(colours, mode="RGB").save(handle, format="PNG"), durable=False)


def read_label_png(path: str) -> np.ndarray:
    """The ``[H, W]`` uint8 class ids of a PNG written by :func:`save_label_png` or :func:`save_id_png`."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected a palette or grey label PNG, got mode {image.mode}")
        return np.asarray(image, dtype=np.uint8)


def _check_label(label: np.ndarray) -> np.ndarray:
    label = np.asarray(label)
    if label.ndim != 2 or label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label: expected a [H,W] map with values in 0..255, got shape {label.shape}")
    return np.ascontiguousarray(label, dtype=np.uint8)
