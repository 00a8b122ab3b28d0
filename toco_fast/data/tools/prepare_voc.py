"""Write the split lists and the image-level label cache of a VOC-layout dataset.

``python -m toco_fast.data.prepare_voc --root VOCdevkit/VOC2012 [--lists-dir DIR] [--force]``

* ``train.txt``, ``val.txt`` (and any other ``*.txt`` of ``ROOT/ImageSets/Segmentation``): copied into
  ``--lists-dir`` when it is another folder.
* ``train_aug.txt``: every mask of ``SegmentationClassAug/`` whose name is not in ``val.txt`` (10,582 images
  for VOC 2012 + SBD), sorted.
* ``cls_labels_onehot.npy``: for every name of every list but ``test*.txt``, the foreground classes present in its mask
  (``SegmentationClassAug``, else ``SegmentationClass``), background and 255 excluded.

Existing files are kept unless ``--force``. Every mask is decoded once (threads; a minute or so for VOC).
Needs numpy and PIL only (no torch).
"""
import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

from toco_fast.io.atomic import TMP_PREFIX

from ..classes import VOC_CLASSES
from ..errors import DataError
from ..files import LABEL_CACHE_NAME, labels_from_mask, load_name_list, read_mask, save_cls_labels, write_name_list
from ..layouts.source import DEFAULT_LISTS_SUBDIR, require_dir

MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")


def prepare_voc(root: str, lists_dir: Optional[str] = None, num_classes: int = len(VOC_CLASSES),
                force: bool = False, num_threads: int = 8) -> Dict[str, str]:
    """Create the missing list files and label cache (see the module docstring).

    Returns:
        what was written: file name -> path.

    Raises:
        DataError: missing root / masks, an unreadable mask, or class ids >= ``num_classes``.
    """
    require_dir(root, "voc dataset root")
    official = os.path.join(root, DEFAULT_LISTS_SUBDIR)
    lists_dir = lists_dir if lists_dir is not None else official
    os.makedirs(lists_dir, exist_ok=True)
    written: Dict[str, str] = {}
    if os.path.abspath(lists_dir) != os.path.abspath(official) and os.path.isdir(official):
        for entry in sorted(os.listdir(official)):
            target = os.path.join(lists_dir, entry)
            if entry.endswith(".txt") and (force or not os.path.exists(target)):
                shutil.copyfile(os.path.join(official, entry), target)
                written[entry] = target
    aug_dir = os.path.join(root, MASK_DIRS[0])
    train_aug = os.path.join(lists_dir, "train_aug.txt")
    if os.path.isdir(aug_dir) and (force or not os.path.exists(train_aug)):
        val_file = os.path.join(lists_dir, "val.txt")
        val = set(load_name_list(val_file)) if os.path.isfile(val_file) else set()
        names = sorted(os.path.splitext(f)[0] for f in os.listdir(aug_dir)
                       if f.endswith(".png") and not f.startswith(TMP_PREFIX))
        names = [name for name in names if name not in val]
        if not names:
            raise DataError(f"{aug_dir}: no masks outside val.txt to list in train_aug.txt")
        write_name_list(train_aug, names)
        written["train_aug.txt"] = train_aug
    cache = os.path.join(lists_dir, LABEL_CACHE_NAME)
    if force or not os.path.exists(cache):
        names = _all_listed_names(lists_dir)
        if not names:
            raise DataError(f"{lists_dir}: no split lists (*.txt) to derive image-level labels for")
        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            vectors = list(pool.map(lambda n: _label_of(root, n, num_classes), names))
        save_cls_labels(cache, dict(zip(names, vectors)))
        written[LABEL_CACHE_NAME] = cache
    return written


def _all_listed_names(lists_dir: str) -> List[str]:
    names, seen = [], set()
    for entry in sorted(os.listdir(lists_dir)):
        # test lists have no masks to derive labels from
        if entry.endswith(".txt") and not entry.startswith("test"):
            for name in load_name_list(os.path.join(lists_dir, entry)):
                if name not in seen:
                    seen.add(name)
                    names.append(name)
    return names


def _label_of(root: str, name: str, num_classes: int):
    for sub in MASK_DIRS:
        path = os.path.join(root, sub, f"{name}.png")
        if os.path.isfile(path):
            try:
                return labels_from_mask(read_mask(path), num_classes)
            except ValueError as exc:
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"{path}: {exc}") from None
    raise DataError(f"{os.path.join(root, MASK_DIRS[0], name + '.png')}: mask not found (needed for the "
                    f"image-level label of {name!r})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``python -m toco_fast.data.prepare_voc`` command; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m toco_fast.data.prepare_voc",
                                     description="Write VOC split lists and the image-level label cache.")
    parser.add_argument("--root", required=True, help="the VOC2012 folder (JPEGImages, SegmentationClassAug, ...)")
    parser.add_argument("--lists-dir", default=None, help="where to write (default ROOT/ImageSets/Segmentation)")
    parser.add_argument("--num-classes", type=int, default=len(VOC_CLASSES))
    parser.add_argument("--force", action="store_true", help="rewrite files that exist")
    args = parser.parse_args(argv)
    try:
        written = prepare_voc(args.root, args.lists_dir, args.num_classes, args.force)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"wrote {path}")
    if not written:
        print("nothing to do: lists and label cache exist (use --force to rewrite)")
    return 0
