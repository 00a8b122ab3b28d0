"""What ``python -m toco_fast.infer`` reads: a dataset split, a folder of images or a list of image files, as
per-image items that the data-loading workers prepare (decode, normalise, resize to the working size) and that
batch as plain lists (images differ in size).

Item (a dict), one of three kinds:

* to process: ``name`` str, ``image`` float32 ``[3, H, W]`` normalised, ``mask`` int64 ``[H, W]`` (all
  ``ignore_index`` without a mask), ``cls_label`` float32 ``[C-1]``, ``has_label`` bool (the image has an
  image-level label or a mask to take it from), and ``work`` float32 ``[3, S, S]`` (the image resized bilinearly,
  ``align_corners=False``, to the working size S) when a working size is set;
* done earlier (resume: every output file exists and ``overwrite`` is off): ``name``, ``done`` True and ``mask``
  (None without a mask file) -- the image is not decoded;
* unreadable: ``name`` and ``error`` (the ``DataError`` message naming the file), instead of a worker traceback.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from toco_fast.data import DataError, EvalDataset, ImageSource

__all__ = ["OutputSet", "InferenceItems", "collate_items", "image_folder_source", "image_list_source"]


@dataclass(frozen=True)
class OutputSet:
    """The files one image produces: ``<out_dir>/<folder>/<name><suffix>`` for each ``(folder, suffix)``."""

    out_dir: str
    entries: Tuple[Tuple[str, str], ...]

    def path(self, folder: str, name: str) -> str:
        suffix = dict(self.entries)[folder]
        return os.path.join(self.out_dir, folder, name + suffix)

    def paths(self, name: str) -> List[str]:
        return [os.path.join(self.out_dir, folder, name + suffix) for folder, suffix in self.entries]

    def complete(self, name: str) -> bool:
        """Whether every output of ``name`` exists (files are written atomically: existing means complete)."""
        return all(os.path.isfile(path) for path in self.paths(name))


class InferenceItems(torch.utils.data.Dataset):
    """The items of ``source`` (see the module docstring).

    Args:
        source: the images (a split, :func:`image_folder_source` or :func:`image_list_source`).
        work_size: S, the side of the square working copy (``work``), or None for none.
        outputs: the files an image produces; with ``overwrite`` False an image whose files all exist comes back
            as a done item.
        overwrite: recompute images whose outputs exist.
    """

    def __init__(self, source: ImageSource, work_size: Optional[int] = None, outputs: Optional[OutputSet] = None,
                 overwrite: bool = True):
        if work_size is not None and work_size < 1:
            raise ValueError(f"work_size: expected a positive size, got {work_size}")
        self.source = source
        self.dataset = EvalDataset(source, require_masks=False)
        self.work_size = work_size
        self.outputs = outputs
        self.overwrite = overwrite

    def __len__(self) -> int:
        return len(self.source)

    def _has_mask(self, index: int) -> bool:
        return self.source.has_masks and os.path.isfile(self.source.mask_paths[index])

    def __getitem__(self, index: int) -> Dict[str, object]:
        name = self.source.names[index]
        try:
            if self.outputs is not None and not self.overwrite and self.outputs.complete(name):
                mask = self.source.read_mask(index) if self._has_mask(index) else None
                return {"name": name, "done": True, "mask": None if mask is None else torch.from_numpy(
                    mask.astype("int64"))}
            item = self.dataset[index]
        except DataError as exc:
            return {"name": name, "error": str(exc)}
        item["has_label"] = self.source.has_label(index) or self._has_mask(index)
        if self.work_size is not None:
            item["work"] = F.interpolate(item["image"][None], size=(self.work_size, self.work_size),
                                         mode="bilinear", align_corners=False)[0]
        return item


def collate_items(batch: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """The ``DataLoader`` collate of :class:`InferenceItems`: the list of items as they are."""
    return list(batch)


def _source_of_files(kind: str, root: str, split: str, paths: Sequence[str],
                     class_names: Sequence[str], where: str) -> ImageSource:
    """An unlabelled, maskless source over image files named by their stems (unique)."""
    names, seen = [], {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in seen:
            raise ValueError(f"{where}: {seen[name]} and {path} share the output name {name!r}")
        seen[name] = path
        names.append(name)
    if not names:
        raise ValueError(f"{where}: no images")
    return ImageSource(kind=kind, root=root, split=split, names=names, image_paths=list(paths), mask_paths=None,
                       class_names=class_names, labels={}, list_file=where)


def image_folder_source(folder: str, class_names: Sequence[str]) -> ImageSource:
    """The images directly in ``folder`` (``.jpg``/``.jpeg``/``.png``, sorted by name), no labels, no masks.

    Raises:
        ValueError naming ``--images``: not a folder, no image in it, or two images with the same stem.
    """
    from toco_fast.data.files import IMAGE_EXTENSIONS

    if not os.path.isdir(folder):
        raise ValueError(f"--images: {folder}: not a folder")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if f.endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))
    return _source_of_files("images", folder, os.path.basename(os.path.normpath(folder)), paths, class_names,
                            f"--images {folder}")


def image_list_source(list_file: str, class_names: Sequence[str]) -> ImageSource:
    """The images named in ``list_file`` (UTF-8, one path per line, relative paths from the list's folder, blank
    lines and ``#`` comments skipped), no labels, no masks.

    Raises:
        ValueError naming ``--image-list`` and the line: an unreadable list, a missing image, repeated stems.
    """
    try:
        with open(list_file, encoding="utf-8-sig") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--image-list: {list_file}: cannot read the list ({exc})") from None
    base = os.path.dirname(os.path.abspath(list_file))
    paths = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = entry if os.path.isabs(entry) else os.path.join(base, entry)
        if not os.path.isfile(path):
            raise ValueError(f"--image-list: {list_file}:{number}: {entry}: no such image file")
        paths.append(path)
    return _source_of_files("images", base, os.path.splitext(os.path.basename(list_file))[0], paths, class_names,
                            f"--image-list {list_file}")
